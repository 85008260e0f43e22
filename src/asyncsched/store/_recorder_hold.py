"""Executions without an outcome yet (queued, running), held back briefly so most jobs take one write.

A job's ``queued`` record is usually followed within milliseconds by its ``started`` and outcome records.
Written at once, the queued row costs an INSERT that the next batch turns into an UPDATE; held back up to
``hold`` seconds (still held when its job starts, until that time), the later records merge into it in
Python and the database sees one INSERT of the final row.

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

_OPEN = RANK[Lifecycle.STARTED]  # rows of this rank or lower have no outcome yet


class QueuedHold:
    """The held rows of one Recorder, by ``(job_id, attempt)``: each with when it is due."""

    def __init__(self, hold: float, stream: str) -> None:
        self.hold = hold
        self.stream = stream
        self.rows: dict[tuple[str, int], tuple[Row, float]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, batch: Batch, *, holding: bool) -> None:
        """Merge the held rows of the batch's executions into them; then, when ``holding``, hold the
        batch's rows without an outcome (queued, running) until their time. A row that gets its outcome
        is written with the batch, and every entry merged into it is acknowledged with it."""
        rows = batch.executions
        kept: set[bytes | str] = set()  # entries of this batch now held: not acknowledged with it
        earlier: list[bytes | str] = []  # entries of held rows written with this batch
        if self.rows:
            for key in [k for k in rows if k in self.rows]:
                held, due = self.rows.pop(key)
                new = rows[key]
                before = list(held.ids)
                held.apply(new.rank, new.status, new.values, new.first_seen)  # the held row is older
                held.ids = list(dict.fromkeys([*held.ids, *new.ids[1:]]))  # an entry read again: once
                if holding and held.rank <= _OPEN:
                    self.rows[key] = (held, due)  # still no outcome: held until its time
                    kept.update(new.ids)
                    del rows[key]
                else:
                    rows[key] = held
                    earlier.extend(before)
        if holding and self.hold > 0:
            due = time.monotonic() + self.hold
            for key, row in list(rows.items()):
                if row.rank <= _OPEN:
                    self.rows[key] = (row, due)
                    kept.update(row.ids)
                    del rows[key]
        if kept or earlier:
            acks = batch.ack.get(self.stream, [])
            batch.ack[self.stream] = [i for i in acks if i not in kept] + earlier
            batch.size += len(earlier) - len(kept)

    def due(self, *, everything: bool = False) -> Batch | None:
        """A batch of the held rows whose time has come (``everything``: all of them), or ``None``."""
        if not self.rows:
            return None
        now = time.monotonic()
        keys = [k for k, (_, at) in self.rows.items() if everything or at <= now]
        if not keys:
            return None
        batch = Batch()
        acks = batch.ack.setdefault(self.stream, [])
        for key in keys:
            row, _ = self.rows.pop(key)
            batch.executions[key] = row
            acks.extend(row.ids)
        batch.size = len(acks)
        return batch
