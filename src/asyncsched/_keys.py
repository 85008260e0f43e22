"""Redis keys of asyncsched's own (not RQ's): built here and nowhere else.

RQ's keys live in :mod:`asyncsched.rq.keys`. Ours share the same prefix (``Settings.key_prefix``, default
``rq``) so one prefix isolates a deployment, and sit under ``<prefix>:asyncsched:`` where RQ never looks.
"""

from __future__ import annotations

__all__ = ["event_log_stream", "lifecycle_stream", "ns"]


def ns(prefix: str) -> str:
    """The namespace of every asyncsched-owned key."""
    return f"{prefix}:asyncsched"


def lifecycle_stream(prefix: str) -> str:
    """STREAM of job lifecycle records (see :mod:`asyncsched._lifecycle`)."""
    return f"{ns(prefix)}:lifecycle"


def event_log_stream(prefix: str) -> str:
    """STREAM of published event envelopes to persist as ``EventMessage`` rows (when persistence is on)."""
    return f"{ns(prefix)}:eventlog"
