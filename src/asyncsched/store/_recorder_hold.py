"""Executions without an outcome yet (queued, running), held back so most jobs take one write.

A job's ``queued`` record is usually followed within milliseconds by its ``started`` and outcome records.
Written at once, the queued row costs an INSERT that a later batch turns into an UPDATE (on PostgreSQL an
UPDATE of a history row costs more than its INSERT: a new version in every index); held back, the later
records merge into it in Python and the database sees one INSERT of the final row.

How long: ``hold`` seconds once the reader has caught up with the stream (still held when its job starts,
until that time). While the reader is behind (its last read was full: a backlog after an outage, or a
burst), the outcome is usually further down the backlog, so a row is held up to ``behind`` seconds: a
catch-up reads ahead and merges each job's records across its reads. At most ``max_rows`` rows are held
(about half a kilobyte each: the fields the row still needs); past that, new rows are written at once.

Nothing is lost by holding: a held row's stream entry is not acknowledged until the row is written (it
stays pending in Redis, so a crash re-reads it), and a job that stays queued is written once its
``hold`` has passed (the Recorder's loop looks every ``flush_interval``). ``Recorder.flush()`` and a
Recorder that stops write every held row at once.
"""

from __future__ import annotations

import time

from .._lifecycle import RANK, Lifecycle
from ._history_rows import ROW_HELD, ROW_IDS, ROW_RANK, Batch, Row

__all__ = ["QueuedHold", "row_ids"]

_OPEN = RANK[Lifecycle.STARTED]  # rows of this rank or lower have no outcome yet


def row_ids(row: Row) -> list[bytes]:
    """The ids of the entries merged into ``row`` (each once, first seen first)."""
    return list(dict.fromkeys(row[ROW_IDS].split(b",")))


_SPENT = frozenset((b"k", b"j", b"a"))  # fields (tags: kind, job id, attempt) a held row keeps under its
# bookkeeping keys


def _compact(row: Row) -> Row:
    """``row`` without the record fields the merge has already taken in (a smaller dict to hold): a row
    merged from one record has none (``new_row`` drops them), so it is held as it is."""
    if b"k" not in row:
        return row
    return {k: v for k, v in row.items() if k not in _SPENT}


class QueuedHold:
    """The held rows of one Recorder, by ``(job_id, attempt)``, in the order they were held (each with
    when it was held under ``ROW_HELD``)."""

    def __init__(
        self, hold: float, stream: str, *, behind: float | None = None, max_rows: int = 250_000
    ) -> None:
        self.hold = hold
        self.behind = hold if behind is None else max(hold, behind)
        self.max_rows = max_rows
        self.stream = stream
        self.rows: dict[tuple[bytes, int], Row] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, batch: Batch, *, holding: bool) -> None:
        """Settle the held rows the batch merged records into (read with ``Batch(held=self.rows)``):
        one that got its outcome (or all, unless ``holding``) is written with the batch, and every entry
        merged into it is acknowledged with it; one still without an outcome stays held, and so do its
        new entries. Then, when ``holding``, hold the batch's rows without an outcome (queued, running)
        until their time."""
        held_rows = self.rows
        if batch.held is not held_rows:
            raise ValueError("the batch was not read with Batch(held=hold.rows): held rows would be missed")
        rows = batch.executions
        kept: list[bytes] = []  # entries of this batch now held: not acknowledged with it
        earlier: list[bytes | str] = []  # entries of held rows written with this batch
        for key, (row, before) in batch.touched.items():
            if held_rows.get(key) is not row or (holding and row[ROW_RANK] <= _OPEN):
                # still held, or released (due) since the merge: acknowledged with the batch it is in
                kept.extend(row[ROW_IDS][len(before) + 1 :].split(b","))
            else:
                del held_rows[key]
                rows[key] = row
                earlier.extend(before.split(b","))
        batch.touched = {}
        room = self.max_rows - len(held_rows)
        if holding and self.hold > 0 and room > 0:
            now = time.monotonic()
            for key, row in list(rows.items()):
                if row[ROW_RANK] <= _OPEN:
                    row[ROW_HELD] = now
                    held_rows[key] = _compact(row)
                    kept.extend(row[ROW_IDS].split(b","))
                    del rows[key]
                    room -= 1
                    if not room:
                        break
        if kept or earlier:
            acks = batch.ack.get(self.stream, [])
            if kept:
                spent = set(kept)
                acks = [i for i in acks if i not in spent]
            acks = list(dict.fromkeys(acks + earlier)) if earlier else acks
            batch.size += len(acks) - len(batch.ack.get(self.stream, ()))
            batch.ack[self.stream] = acks

    def due(
        self, *, behind: bool = False, everything: bool = False, limit: int | None = None
    ) -> Batch | None:
        """A batch of up to ``limit`` held rows whose time has come (``behind``: the reader is behind, the
        rows are held longer), oldest first (``everything``: of the held rows whatever their time), or
        ``None``."""
        if not self.rows:
            return None
        since = time.monotonic() - (self.behind if behind else self.hold)
        keys: list[tuple[bytes, int]] = []
        for key, row in self.rows.items():  # in the order they were held: the due ones come first
            if (not everything and row[ROW_HELD] > since) or (limit is not None and len(keys) >= limit):
                break
            keys.append(key)
        if not keys:
            return None
        batch = Batch()
        acks = batch.ack.setdefault(self.stream, [])
        for key in keys:
            row = batch.executions[key] = self.rows.pop(key)
            acks.extend(row_ids(row))
        batch.size = len(acks)
        return batch
