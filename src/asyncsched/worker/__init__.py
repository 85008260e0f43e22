"""The worker: runs RQ-format jobs, ``async def`` on the event loop and ``def`` in a thread pool.

``python -m asyncsched.worker [QUEUE ...]`` and ``asyncsched worker [QUEUE ...]`` run one.
Inside a job, :func:`current_job` (and ``rq.get_current_job()`` when ``rq`` is installed) is that job: its
id, attempt, meta, progress reporting, cancel token and the worker's shared resources (:class:`Hooks`).
"""

from ..exceptions import WorkerHookError
from ._hooks import Hooks
from ._rqjob import CurrentJob, current_job, with_job
from ._settings import WorkerSettings
from ._worker import ORPHAN_POLICIES, Worker

__all__ = [
    "ORPHAN_POLICIES",
    "CurrentJob",
    "Hooks",
    "Worker",
    "WorkerHookError",
    "WorkerSettings",
    "current_job",
    "with_job",
]
