"""The worker: runs RQ-format jobs, ``async def`` on the event loop and ``def`` in a thread pool.

``python -m asyncsched.worker [QUEUE ...]`` and ``asyncsched worker [QUEUE ...]`` run one.
"""

from ._worker import ORPHAN_POLICIES, Worker

__all__ = ["ORPHAN_POLICIES", "Worker"]
