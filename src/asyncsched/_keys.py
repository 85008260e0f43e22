"""Redis keys of asyncsched's own: an alias of :mod:`asyncsched.rq.keys`, where every key is built.

Re-exports every name of that module's ``__all__`` (its key builders), so that the list is written once.
"""

from __future__ import annotations

from .rq.keys import *  # noqa: F403 (the alias re-exports the key table as it is)
