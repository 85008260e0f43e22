"""The synchronous facade: the spec's calls, unchanged, for sync code.

``TaskQueue().enqueue(...)``, ``EventBus().publish(...)``, ``TaskScheduler().load_tasks_from_yaml(...)``
work from Flask/Django views and from sync task functions running in a worker's threads. Each class
delegates to its async twin through one private event-loop thread (:mod:`asyncsched._portal`); nothing is
implemented twice.
"""

from __future__ import annotations

from .events._sync import EventBus
from .queue._sync import TaskQueue
from .scheduler._sync import TaskScheduler
from .store._sync import History

__all__: list[str] = ["EventBus", "History", "TaskQueue", "TaskScheduler"]
