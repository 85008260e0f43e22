"""The wire-format codec and serializers (no Redis needed)."""

from __future__ import annotations

import json
import os
import pickle
import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

from asyncsched.exceptions import InvalidJob, SerializationError, UnsafeJob
from asyncsched.queue._functions import func_name, import_function
from asyncsched.queue._models import Retry, from_rq_status, retry_interval
from asyncsched.rq import codec, serializers
from asyncsched.rq.keys import RQKeys
from asyncsched.rq.serializers import Format


def test_detect_never_unpickles() -> None:
    assert serializers.detect(pickle.dumps(("f", None, (), {}), protocol=5)) == Format.PICKLE
    assert serializers.detect(pickle.dumps([1], protocol=2)) == Format.PICKLE
    assert serializers.detect(b'["f", null, [], {}]') == Format.JSON
    assert serializers.detect(b"  {}") == Format.JSON
    with pytest.raises(UnsafeJob):
        serializers.loads(pickle.dumps(1), accept_pickle=False)
    assert serializers.loads(pickle.dumps(1), accept_pickle=True) == (1, Format.PICKLE)


def test_data_round_trip_and_rq_bytes() -> None:
    raw = codec.encode_data("operator.add", (2, 3), {}, "json")
    assert raw == b'["operator.add", null, [2, 3], {}]'  # small: as it is
    assert codec.decode_data(raw, accept_pickle=False) == ("operator.add", (2, 3), {}, Format.JSON)
    praw = codec.encode_data("operator.add", (2, 3), {}, "pickle")
    assert pickle.loads(praw) == ("operator.add", None, (2, 3), {})
    big = codec.encode_data("operator.add", ("x" * 200,), {}, "json")
    assert json.loads(zlib.decompress(big)) == ["operator.add", None, ["x" * 200], {}]  # compressible: zlib
    pbig = codec.encode_data("operator.add", ("x" * 200,), {}, "pickle")
    assert pickle.loads(zlib.decompress(pbig))[2] == ("x" * 200,)
    uncompressed = json.dumps(["m.f", None, [], {"a": 1}]).encode()
    assert codec.decode_data(uncompressed, accept_pickle=False)[2] == {"a": 1}
    with pytest.raises(ValueError, match="sequence"):
        codec.decode_data(zlib.compress(b"[1, 2]"), accept_pickle=False)
    with pytest.raises(SerializationError):
        codec.encode_data("m.f", (object(),), {}, "json")


@pytest.mark.parametrize("size", [0, 1, 55, 511, 512, 513, 4096, 70_000, 300_000])
def test_deflate_is_a_zlib_stream_any_reader_takes(size: int) -> None:
    raw = (b"asyncsched " * (size // 11 + 1))[:size]
    packed = codec.deflate(raw)
    assert zlib.decompress(packed) == raw  # what RQ does, with zlib's default (largest) window
    assert zlib.decompressobj().decompress(packed) == raw
    if size >= 512:
        assert len(packed) <= len(zlib.compress(raw)) + 8  # sized window, no worse compression
    exc = codec.encode_exc("Traceback ...\n" * size)
    assert codec.decode_exc(exc) == "Traceback ...\n" * size


def test_timestamps_match_rq() -> None:
    dt = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert codec.fmt_ts(dt) == "2026-01-02T03:04:05.678901Z"
    assert codec.parse_ts(b"2026-01-02T03:04:05.678901Z") == dt
    assert codec.parse_ts("2026-01-02T03:04:05Z") == dt.replace(microsecond=0)
    assert codec.parse_ts("") is None


@pytest.mark.parametrize(
    "dt",
    [
        datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC),  # isoformat drops a zero fraction unless told
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # strftime's unpadded year
        datetime(9999, 1, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=-7))),
    ],
)
def test_timestamp_text_is_rqs_strftime(dt: datetime) -> None:
    """``fmt_ts`` writes RQ's ``utcformat`` text (``strftime('%Y-%m-%dT%H:%M:%S.%fZ')`` of the UTC time)."""
    assert codec.fmt_ts(dt) == dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_call_string_is_rqs() -> None:
    assert codec.call_string("m.f", (1, "a"), {"z": 1, "b": [2]}) == "m.f(1, 'a', b=[2], z=1)"
    assert codec.call_string("m.f", ("x" * 100,), {}).endswith("...)")


def test_result_entry_decode() -> None:
    fields = {
        b"type": b"2",
        b"worker_name": b"w",
        b"exc_string": codec.encode_exc("Traceback\nE: x").encode(),
    }
    entry = codec.ResultEntry.decode(b"1700000000000-0", fields)
    assert entry.type == codec.ResultType.FAILED
    assert entry.exc_string == "Traceback\nE: x"
    assert entry.created_at.year == 2023
    ok = codec.ResultEntry.decode(b"1-0", {b"type": b"1", b"return_value": b"gAVLBS4="})  # RQ's pickled 5
    assert ok.value(accept_pickle=True) == 5
    with pytest.raises(UnsafeJob):
        ok.value(accept_pickle=False)


def test_functions() -> None:
    assert func_name("pkg.mod:func") == "pkg.mod.func"
    assert func_name(json.dumps) == "json.dumps"
    with pytest.raises(InvalidJob):
        func_name("nodots")
    assert import_function("json:dumps") is json.dumps
    assert import_function("json.encoder.JSONEncoder.encode") is json.JSONEncoder.encode
    with pytest.raises(InvalidJob, match="not a function defined in module 'json'"):
        import_function("json.JSONEncoder.encode")  # JSONEncoder is defined in json.encoder
    with pytest.raises(InvalidJob, match="no attribute"):
        import_function("json.nothing")


def test_retry_rules_are_rqs() -> None:
    assert retry_interval([1, 2, 3], 3) == 1
    assert retry_interval([1, 2, 3], 1) == 3
    assert retry_interval([5], 4) == 5
    assert retry_interval(None, 2) == 0
    assert Retry(3, 10).intervals == [10]
    with pytest.raises(ValueError, match="non-negative"):
        Retry(2, [-1])
    assert from_rq_status("stopped") == "cancelled"
    with pytest.raises(InvalidJob):
        from_rq_status("weird")


def test_keys_use_the_prefix() -> None:
    k = RQKeys("custom")
    assert k.queue("q") == "custom:queue:q"
    assert k.queue_name(b"custom:queue:q") == "q"
    assert k.wip("q") == "custom:wip:q"
    assert k.worker_executions("w") == "custom:worker:w:executions"


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 100, 1000, 70_000])
@pytest.mark.parametrize("kind", ["repetitive", "random"])
def test_job_data_is_the_shorter_of_raw_and_zlib_and_rq_reads_it(size: int, kind: str) -> None:
    """Tiny payloads are stored uncompressed (a zlib stream of them is longer, and keeps the job hash out of
    Redis' compact listpack encoding); others compressed when that saves bytes. Real RQ reads them all."""
    import base64

    import redis
    from rq.job import Job

    text = "ab" * size if kind == "repetitive" else base64.b64encode(os.urandom(size)).decode()
    for fmt in ("json", "pickle"):
        raw = serializers.dumps(("tests.jobs.echo", None, (text[:size],), {}), fmt)
        data = codec.encode_data("tests.jobs.echo", (text[:size],), {}, fmt)
        assert len(data) <= len(raw)
        if len(raw) <= codec.SMALL_DATA:
            assert data == raw
        elif kind == "repetitive":
            assert zlib.decompress(data) == raw
        assert codec.decode_data(data, accept_pickle=True)[1] == (text[:size],)
        job = Job("x", connection=redis.Redis())  # never connects: restore reads nothing
        job.restore({b"data": data, b"created_at": b"", b"origin": b"default"})
        assert job.data == raw  # what RQ's worker unpacks
