"""Executions only queued, held back briefly so that most jobs take one write: their final state.

A job's ``queued`` record is usually followed within milliseconds by its ``started`` and outcome records.
Written at once, the queued row costs an INSERT that the next batch turns into an UPDATE; held back up to
``hold`` seconds (and still held when its job starts, until that time), the later records merge into it
in Python and the database sees one INSERT of the final row.

Nothing is lost by holding: a held row's stream entry is not acknowledged until the row is written (it
stays pending in Redis, so a crash re-reads it), and a job that stays queued is written once its
``hold`` has passed (the Recorder's loop looks every ``flush_interval``). ``Recorder.flush()`` and a
Recorder that stops write every held row at once.
"""

from __future__ import annotations

import time

from .._lifecycle import RANK, Lifecycle
from ._history_rows import Batch, Row

__all__ = ["QueuedHold"]

_QUEUED = RANK[Lifecycle.QUEUED]
_STARTED = RANK[Lifecycle.STARTED]


class _Held:
    __slots__ = ("due", "ids", "row")

    def __init__(self, row: Row, ids: list[bytes | str], due: float) -> None:
        self.row, self.ids, self.due = row, ids, due


class QueuedHold:
    """The held rows of one Recorder, by ``(job_id, attempt)``: each with its entry ids and due time."""

    def __init__(self, hold: float, stream: str) -> None:
        self.hold = hold
        self.stream = stream
        self.rows: dict[tuple[str, int], _Held] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, batch: Batch, *, holding: bool) -> None:
        """Merge the held rows of the batch's executions into them, and, when ``holding``, hold the batch's
        rows that are only queued (one record). A held row whose job starts (one more record) stays held
        until its time; any other record makes it part of the batch (acknowledged with it)."""
        rows = batch.executions
        acks = batch.ack.setdefault(self.stream, [])
        taken: set[bytes | str] = set()
        if self.rows:
            for key in [k for k in rows if k in self.rows]:
                held, new = self.rows.pop(key), rows.pop(key)
                single = not new.merged
                held.row.apply(new.rank, new.status, new.values)  # the held record is the older one
                if holding and single and held.row.rank <= _STARTED:
                    held.ids.append(new.first_seen)  # still no outcome: one write later, at most
                    taken.add(new.first_seen)
                    self.rows[key] = held
                    continue
                held.row.merged = True
                rows[key] = held.row
                acks.extend(held.ids)
                batch.size += len(held.ids)
        if holding and self.hold > 0:
            due = time.monotonic() + self.hold
            for key, row in list(rows.items()):
                if row.rank == _QUEUED and not row.merged:
                    self.rows[key] = _Held(row, [row.first_seen], due)
                    taken.add(row.first_seen)
                    del rows[key]
        if taken:
            batch.ack[self.stream] = [i for i in acks if i not in taken]
            batch.size -= len(taken)

    def due(self, *, everything: bool = False) -> Batch | None:
        """A batch of the held rows whose time has come (``everything``: all of them), or ``None``."""
        if not self.rows:
            return None
        now = time.monotonic()
        keys = [k for k, held in self.rows.items() if everything or held.due <= now]
        if not keys:
            return None
        batch = Batch()
        acks = batch.ack.setdefault(self.stream, [])
        for key in keys:
            held = self.rows.pop(key)
            held.row.merged = True
            batch.executions[key] = held.row
            acks.extend(held.ids)
        batch.size = len(acks)
        return batch
