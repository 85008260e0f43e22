"""The Recorder's merge of lifecycle entries into rows: entries as the client parses a read and as raw
field lists give the same rows; held rows merge later entries and are released oldest first."""

from __future__ import annotations

import logging

import pytest

from asyncsched._lifecycle import PACKED, pack
from asyncsched.store._history_rows import Batch, ExecutionRow
from asyncsched.store._recorder_hold import QueuedHold, row_ids

NOW = 1_900_000_000_000_000

ENTRIES: list[tuple[bytes, list[bytes]]] = [
    (b"20000-0", [b"kind", b"queued", b"job_id", b"a", b"queue", b"q", b"enqueued_at", b"10.5"]),
    (b"20000-1", [b"kind", b"queued", b"job_id", b"b", b"enqueued_at", b"11"]),
    (b"20001-0", [b"kind", b"started", b"job_id", b"a", b"started_at", b"12", b"worker", b"w"]),
    (b"20001-1", []),  # trimmed after delivery
    (b"20002-0", [b"kind", b"success", b"job_id", b"a", b"started_at", b"12", b"ended_at", b"13.25"]),
    (b"20002-1", [b"kind", b"started", b"job_id", b"b", b"started_at", b"nan"]),  # bad time: skipped alone
    (b"20003-0", [b"kind", b"retry", b"job_id", b"b", b"attempt", b"2", b"error", b"E: x"]),
    (b"20003-1", [b"kind", b"queued", b"job_id", b"a", b"queue", b"late", b"function", b"f"]),  # lower rank
    (b"20004-0", [b"kind", b"nonsense", b"job_id", b"c"]),  # unknown kind: skipped alone
]


def _parsed(entries: list[tuple[bytes, list[bytes]]]) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries as the client parses a read: ``(id, {field: value})``."""
    return [(entry_id, dict(zip(fields[::2], fields[1::2], strict=True))) for entry_id, fields in entries]


def _rows(batch: Batch) -> dict[tuple[str, int], ExecutionRow]:
    return {(r.job_id, r.attempt): r for r in batch.rows(NOW)}


def test_parsed_and_raw_entries_merge_into_the_same_rows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    parsed, raw, nested = Batch(), Batch(), Batch()
    assert parsed.add_entries("s", _parsed(ENTRIES)) == b"20004-0"
    assert raw.add_entries("s", [[i, f or None] for i, f in ENTRIES]) == b"20004-0"  # as Redis sends them
    nested.add_lifecycle("s", [[i, f] for i, f in ENTRIES])
    assert _rows(parsed) == _rows(raw) == _rows(nested)
    for batch in (parsed, raw, nested):
        assert (len(batch), batch.trimmed) == (len(ENTRIES), 1)
        assert batch.ack["s"] == [i for i, _ in ENTRIES]  # every entry acknowledged, skipped ones too
    rows = _rows(parsed)
    assert set(rows) == {("a", 1), ("b", 1), ("b", 2)}
    a = rows["a", 1]
    assert (a.status, a.worker_name, a.function) == ("success", "w", "f")
    assert a.queue == "q"  # the late queued record only fills what is missing
    assert (a.enqueued_at, a.started_at, a.ended_at) == (10_500_000, 12_000_000, 13_250_000)
    assert (a.duration, a.created_at, a.updated_at) == (1.25, 10_500_000, NOW)
    b1 = rows["b", 1]
    assert (b1.status, b1.started_at) == ("queued", None)  # its bad started record was skipped
    assert (rows["b", 2].status, rows["b", 2].error) == ("failed", "E: x")


def _packed(fields: list[bytes]) -> list[bytes]:
    """An entry's fields as the packed format writes them (the same record)."""
    names = [f.decode() for f in fields[::2]]
    return [v.encode() for v in pack(zip(names, (f.decode() for f in fields[1::2]), strict=True))]


def test_packed_entries_and_those_of_the_earlier_format_merge_into_the_same_rows() -> None:
    """Records written before the packed format (still in the stream after an upgrade) give the same rows,
    alone or mixed with packed ones; a value holding the separator, in a field of its own, too."""
    packed = [(i, _packed(f) if f else f) for i, f in ENTRIES]
    assert all(f[0] == PACKED.encode() for _, f in packed if f)
    mixed = [p if k % 2 else e for k, (e, p) in enumerate(zip(ENTRIES, packed, strict=True))]
    earlier, new, both, nested = Batch(), Batch(), Batch(), Batch()
    earlier.add_entries("s", ENTRIES)
    new.add_entries("s", packed)
    both.add_entries("s", mixed)
    nested.add_lifecycle(
        "s", [[i, {k.decode(): v.decode() for k, v in zip(f[::2], f[1::2], strict=True)}] for i, f in mixed]
    )
    assert _rows(earlier) == _rows(new) == _rows(both) == _rows(nested)
    assert [len(b.poison) for b in (earlier, new, both, nested)] == [2, 2, 2, 2]
    odd = Batch()
    odd.add_entries("s", [(b"1-0", _packed([b"kind", b"queued", b"job_id", b"x\x1fy", b"queue", b"q\x1f"]))])
    (row,) = odd.rows(NOW)
    assert (row.job_id, row.queue, row.status) == ("x\x1fy", "q\x1f", "queued")


def test_an_empty_read_merges_nothing() -> None:
    batch = Batch()
    assert batch.add_entries("s", []) is None
    assert (len(batch), batch.rows(NOW)) == (0, [])


def test_held_rows_take_later_entries_and_are_released_oldest_first() -> None:
    hold = QueuedHold(3600.0, "s")
    first = Batch(held=hold.rows)
    first.add_entries("s", _parsed(ENTRIES[:2]))  # a and b queued
    hold.take(first, holding=True)
    assert (len(hold), first.rows(NOW), first.ack["s"], len(first)) == (2, [], [], 0)

    second = Batch(held=hold.rows)
    second.add_entries("s", _parsed(ENTRIES[2:5]))  # a started, a trimmed entry, a success
    hold.take(second, holding=True)
    assert len(hold) == 1  # b stays held; a has its outcome and is written with this batch
    (a,) = second.rows(NOW)
    assert (a.job_id, a.status, a.enqueued_at, a.created_at) == ("a", "success", 10_500_000, 10_500_000)
    assert sorted(second.ack["s"]) == [b"20000-0", b"20001-0", b"20001-1", b"20002-0"]
    assert len(second) == 4

    assert hold.due() is None  # not due yet
    third = Batch(held=hold.rows)
    third.add_entries("s", _parsed([(b"20005-0", [b"kind", b"queued", b"job_id", b"d"])]))
    hold.take(third, holding=True)
    released = hold.due(everything=True, limit=1)
    assert released is not None
    assert [r.job_id for r in released.rows(NOW)] == ["b"]  # the oldest held first, up to the limit
    assert released.ack["s"] == [b"20000-1"]
    rest = hold.due(everything=True)
    assert rest is not None
    assert [r.job_id for r in rest.rows(NOW)] == ["d"]
    assert len(hold) == 0


def test_an_entry_read_again_is_acknowledged_once() -> None:
    hold = QueuedHold(3600.0, "s")
    first = Batch(held=hold.rows)
    first.add_entries("s", _parsed(ENTRIES[:1]))
    hold.take(first, holding=True)
    again = Batch(held=hold.rows)
    again.add_entries("s", _parsed(ENTRIES[:1]))  # the same entry delivered again (a restart)
    hold.take(again, holding=True)
    assert (again.ack["s"], len(again)) == ([], 0)  # still held: acknowledged when it is written
    (row,) = hold.rows.values()
    assert row_ids(row) == [b"20000-0"]


def test_a_text_is_clipped_to_each_column_it_fills() -> None:
    long = b"x" * 300  # the same long text as function (500 characters) and as queue (200)
    batch = Batch()
    fields = [b"kind", b"queued", b"job_id", b"a", b"function", long, b"queue", long]
    batch.add_entries("s", [(b"1-0", fields)])
    (row,) = batch.rows(NOW)
    assert (len(row.function or ""), len(row.queue)) == (300, 200)


def test_a_batch_read_without_the_held_rows_is_refused() -> None:
    hold = QueuedHold(3600.0, "s")
    first = Batch(held=hold.rows)
    first.add_entries("s", _parsed(ENTRIES[:1]))
    hold.take(first, holding=True)
    blind = Batch()  # would make a second row of a held execution
    blind.add_entries("s", _parsed(ENTRIES[2:3]))
    with pytest.raises(ValueError, match="held"):
        hold.take(blind, holding=True)


def test_entries_merged_into_a_row_released_before_the_take_go_with_that_row() -> None:
    hold = QueuedHold(0.0001, "s")
    first = Batch(held=hold.rows)
    first.add_entries("s", _parsed(ENTRIES[:1]))  # a queued: held
    hold.take(first, holding=True)
    second = Batch(held=hold.rows)
    second.add_entries("s", _parsed(ENTRIES[4:5]))  # a success: merged into the held row (read ahead)
    released = hold.due(everything=True)  # the held row is written before the batch is taken
    assert released is not None
    (a,) = released.rows(NOW)
    assert (a.status, a.enqueued_at, a.ended_at) == ("success", 10_500_000, 13_250_000)
    assert released.ack["s"] == [b"20000-0", b"20002-0"]  # acknowledged after that row's commit
    hold.take(second, holding=True)
    assert (second.ack["s"], len(second), second.rows(NOW)) == ([], 0, [])  # not twice, not earlier
    assert len(hold) == 0


def test_records_merged_into_a_held_row_follow_the_merge_rule_in_order() -> None:
    hold = QueuedHold(3600.0, "s")
    first = Batch(held=hold.rows)
    first.add_entries("s", _parsed(ENTRIES[:1]))  # a queued, queue q
    hold.take(first, holding=True)
    later = Batch(held=hold.rows)
    later.add_entries("s", _parsed([ENTRIES[4], ENTRIES[7]]))  # a success, then a late queued record
    hold.take(later, holding=True)
    (a,) = later.rows(NOW)
    assert (a.status, a.queue, a.function) == ("success", "q", "f")  # the late record only fills
    assert sorted(later.ack["s"]) == [b"20000-0", b"20002-0", b"20003-1"]
