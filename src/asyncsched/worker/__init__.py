"""The worker: runs RQ-format jobs, ``async def`` on the event loop and ``def`` in a thread pool.

``python -m asyncsched.worker [QUEUE ...]`` and ``asyncsched worker [QUEUE ...]`` run one.
Inside a job, :func:`current_job` (and ``rq.get_current_job()`` when ``rq`` is installed) is that job.
"""

from ._rqjob import CurrentJob, current_job
from ._worker import ORPHAN_POLICIES, Worker

__all__ = ["ORPHAN_POLICIES", "CurrentJob", "Worker", "current_job"]
