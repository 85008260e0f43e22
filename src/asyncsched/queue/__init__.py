"""The task queue: enqueue jobs in python-rq's format and inspect them (``TaskQueue``).

The sync twin lives in :mod:`asyncsched.sync`.
"""

from ._limits import Limit
from ._models import Callback, JobRecord, JobStatus, RateLimit, Repeat, Retry, WorkerInfo
from ._queue import TaskQueue

__all__ = [
    "Callback",
    "JobRecord",
    "JobStatus",
    "Limit",
    "RateLimit",
    "Repeat",
    "Retry",
    "TaskQueue",
    "WorkerInfo",
]
