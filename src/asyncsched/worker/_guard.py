"""What keeps a worker running whatever Redis holds: queue backoff and the control channel's parser.

* :class:`QueueBackoff` — a queue whose keys Redis refuses (a key of the wrong type, any error reply that is
  not a lost connection) is left alone for a while: 1 s, doubled at each new failure, capped at
  :data:`MAX_BACKOFF`; the other queues keep running. One log line per failure (the doubling keeps them
  rare); one when the queue works again.
* :func:`parse_command` — one message of RQ's worker command channel, validated on its own; a malformed one
  is reported (rate-limited) and ignored.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable

from ..events._poison import report_malformed

__all__ = ["COMMANDS", "MAX_BACKOFF", "QueueBackoff", "parse_command"]

log = logging.getLogger("asyncsched.worker")

MAX_BACKOFF = 60.0
"""Longest pause of a queue Redis keeps refusing (seconds)."""

COMMANDS = ("shutdown", "stop-job", "stop-execution", "kill-horse")
_MAX_COMMAND = 65_536
_MAX_ID = 200


class QueueBackoff:
    """Queues paused after an error reply from Redis (see the module docs)."""

    def __init__(self, worker: str, first: float = 1.0, cap: float = MAX_BACKOFF) -> None:
        self.worker = worker
        self.first = first
        self.cap = cap
        self._paused: dict[str, tuple[float, float]] = {}  # queue -> (until, delay), monotonic

    def failed(self, queue: str, reason: object) -> None:
        """``queue`` was refused: pause it (longer than last time)."""
        until, delay = self._paused.get(queue, (0.0, 0.0))
        now = time.monotonic()
        if until > now:  # several refusals in one step: one pause
            return
        delay = self.first if delay == 0 else min(delay * 2, self.cap)
        self._paused[queue] = (now + delay, delay)
        log.error(
            "worker %s: queue %s refused by Redis (%s); pausing it %.0fs, the other queues go on",
            self.worker,
            queue,
            reason,
            delay,
        )

    def succeeded(self, queues: Iterable[str]) -> None:
        """``queues`` were used without an error: forget their past pauses."""
        now = time.monotonic()
        for queue in queues:
            entry = self._paused.get(queue)
            if entry is not None and entry[0] <= now:
                del self._paused[queue]
                log.warning("worker %s: queue %s works again", self.worker, queue)

    def active(self, queues: list[str]) -> list[str]:
        """``queues`` without the paused ones (order kept)."""
        if not self._paused:
            return queues
        now = time.monotonic()
        return [q for q in queues if self._paused.get(q, (0.0, 0.0))[0] <= now]

    def next_resume(self) -> float:
        """Seconds until the first paused queue may be tried again (0 when none is paused)."""
        if not self._paused:
            return 0.0
        return max(min(until for until, _ in self._paused.values()) - time.monotonic(), 0.0)


def parse_command(data: object, channel: str) -> dict[str, str] | None:
    """The command of one control message (``{"command": ..., "job_id"/"execution_id": ...}``), or
    ``None`` when the message is malformed (reported, rate-limited)."""
    try:
        if not isinstance(data, bytes | str):
            raise ValueError(f"a {type(data).__name__}, not text")
        if len(data) > _MAX_COMMAND:
            raise ValueError(f"{len(data)} bytes, more than {_MAX_COMMAND}")
        payload = json.loads(data)
        if not isinstance(payload, dict):
            raise ValueError(f"a JSON {type(payload).__name__}, not an object")
        command = payload.get("command")
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r:.80}")
        out = {"command": command}
        for field in ("job_id", "execution_id"):
            value = payload.get(field)
            if value is None:
                continue
            if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID:
                raise ValueError(f"{field} must be a string of 1-{_MAX_ID} characters")
            out[field] = value
        return out
    except (ValueError, RecursionError) as exc:  # ValueError covers JSON and UTF-8 errors
        report_malformed("worker command", channel, exc, data, log)
        return None
