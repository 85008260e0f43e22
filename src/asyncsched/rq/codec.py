"""RQ's job hash and result stream, encoded and decoded (verified against rq 2.12.0 and 3.0.0).

* Hash timestamps are ``%Y-%m-%dT%H:%M:%S.%fZ`` UTC text; registry scores are integer epoch seconds; result
  stream and execution timestamps are float epoch seconds.
* ``data`` is ``serializer.dumps((func_name, None, args, kwargs))``, as a zlib stream (what RQ writes) when
  that is shorter (:func:`pack_data`; RQ reads either); ``meta`` is ``serializer.dumps(meta)`` without zlib.
* A result entry is ``type`` (1 ok, 2 failed, 3 stopped, 4 retried), ``worker_name``, ``return_value``
  (base64 of the serialized value, absent for ``None``), ``exc_string`` (base64 of zlib'd traceback text),
  ``execution_id``, ``execution_started_at``, ``execution_ended_at``; ``created_at`` is the stream id's ms.
"""

from __future__ import annotations

import base64
import enum
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import serializers
from .serializers import Format

__all__ = [
    "ResultEntry",
    "ResultType",
    "call_string",
    "decode_data",
    "decode_exc",
    "deflate",
    "encode_data",
    "encode_exc",
    "fmt_ts",
    "pack_data",
    "parse_ts",
    "text_hash",
]

_TS = "%Y-%m-%dT%H:%M:%S.%fZ"


class ResultType(enum.IntEnum):
    """``rq.results.Result.Type``."""

    SUCCESSFUL = 1
    FAILED = 2
    STOPPED = 3
    RETRIED = 4


def deflate(raw: bytes) -> bytes:
    """A zlib stream of ``raw`` (what RQ's ``zlib.decompress`` reads), with the window and memory level
    sized to the input.

    ``zlib.compress`` sets up ~256 KB of compressor state on every call (a 32 KB window and its tables);
    for a job's few hundred bytes that costs 10x the compression itself (~30 µs when the allocator
    returns the memory to the OS between calls). A window no larger than the input compresses it as
    well (no match reaches before its start); the stream's header records the window; any zlib reader
    takes it.
    """
    bits = min(15, max(9, (len(raw) - 1).bit_length()))
    compressor = zlib.compressobj(6, zlib.DEFLATED, bits, max(1, bits - 7))
    return compressor.compress(raw) + compressor.flush()


SMALL_DATA = 64
"""Serialized job data up to this many bytes is stored as it is: a zlib stream of so few bytes is never
shorter (its header, block and checksum take ~11), and a job hash whose values all fit in Redis'
``hash-max-listpack-value`` (64 by default) stays a listpack (~2.5x less memory, cheaper to write)."""


def pack_data(raw: bytes) -> bytes:
    """The ``data`` field of serialized job data ``raw``: ``raw`` itself when it is small
    (:data:`SMALL_DATA`) or does not compress, else its zlib stream (:func:`deflate`). RQ reads both (it
    tries ``zlib.decompress`` and keeps the bytes when they are not a zlib stream; neither JSON's ``[`` nor
    pickle's ``\\x80`` can open one), as does :func:`decode_data`."""
    if len(raw) <= SMALL_DATA:
        return raw
    packed = deflate(raw)
    return packed if len(packed) < len(raw) else raw


def fmt_ts(dt: datetime | None = None) -> str:
    """RQ's timestamp text for ``dt`` (now when ``None``), always UTC."""
    dt = datetime.now(UTC) if dt is None else dt.astimezone(UTC)
    if dt.year < 1000:  # strftime's %Y does not pad such a year; isoformat would
        return dt.strftime(_TS)
    return dt.isoformat(timespec="microseconds")[:-6] + "Z"  # strftime(_TS)'s text, ~0.5 µs less (per job)


def parse_ts(value: str | bytes | None) -> datetime | None:
    """Parse RQ's timestamp text (also the legacy second-precision form); empty gives ``None``."""
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    for fmt in (_TS, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def text_hash(raw: Mapping[bytes, bytes]) -> dict[str, bytes]:
    """A job hash as returned by redis-py, keyed by text."""
    return {k.decode(): v for k, v in raw.items()}


def encode_data(func_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], fmt: Format | str) -> bytes:
    """The ``data`` field. Raises :class:`~asyncsched.exceptions.SerializationError` for bad arguments."""
    payload = (func_name, None, tuple(args), dict(kwargs))
    return pack_data(serializers.dumps(payload, fmt))


def decode_data(raw: bytes, *, accept_pickle: bool) -> tuple[str, tuple[Any, ...], dict[str, Any], Format]:
    """Inverse of :func:`encode_data`; ``UnsafeJob`` for refused pickle, ``InvalidJob`` for a bound method,
    ``ValueError`` if malformed."""
    try:
        payload = zlib.decompress(raw)
    except zlib.error:
        payload = raw  # RQ accepts uncompressed data too
    value, fmt = serializers.loads(payload, accept_pickle=accept_pickle)
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise ValueError("job data is not a (function, instance, args, kwargs) sequence")
    func, instance, args, kwargs = value
    if not isinstance(func, str) or not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise ValueError("job data has a malformed function name, args or kwargs")
    if instance is not None:
        from ..exceptions import InvalidJob

        raise InvalidJob(
            f"an RQ job on a bound method ({func!r} of an instance in the payload) is not supported by "
            "asyncsched's worker; enqueue a module-level function"
        )
    return func, tuple(args), kwargs, fmt


def _cut(text: str) -> str:
    return text[:75] + "..." if len(text) > 75 else text


def call_string(func_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """RQ's default ``description``: ``module.func(1, 'a', k=2)`` (each repr cut at 75 characters).
    Written for every enqueued job: no function made per call, no sort without keyword arguments."""
    parts = [_cut(repr(a)) for a in args]
    if kwargs:
        parts += sorted(f"{k}={_cut(repr(v))}" for k, v in kwargs.items())
    return f"{func_name}({', '.join(parts)})"


def encode_exc(text: str) -> str:
    """``exc_string`` of a result entry."""
    return base64.b64encode(deflate(text.encode())).decode()


def decode_exc(value: bytes | str) -> str:
    """Inverse of :func:`encode_exc` (tolerates plain text)."""
    try:
        return zlib.decompress(base64.b64decode(value)).decode()
    except (ValueError, zlib.error):
        return value.decode(errors="replace") if isinstance(value, bytes) else value


def encode_value(value: object, fmt: Format | str) -> str | None:
    """``return_value`` of a result entry (``None`` is not written)."""
    if value is None:
        return None
    return base64.b64encode(serializers.dumps(value, fmt)).decode()


@dataclass(frozen=True, slots=True)
class ResultEntry:
    """One entry of ``<p>:results:<id>``."""

    type: ResultType
    created_at: datetime
    worker_name: str
    raw_value: bytes | None
    exc_string: str | None
    execution_id: str | None

    @classmethod
    def decode(cls, entry_id: bytes, fields: Mapping[bytes, bytes]) -> ResultEntry:
        ms = int(entry_id.split(b"-", 1)[0])
        raw = fields.get(b"return_value")
        exc = fields.get(b"exc_string")
        return cls(
            type=ResultType(int(fields[b"type"])),
            created_at=datetime.fromtimestamp(ms / 1000, UTC),
            worker_name=fields.get(b"worker_name", b"").decode(),
            raw_value=base64.b64decode(raw) if raw else None,
            exc_string=decode_exc(exc) if exc else None,
            execution_id=(fields[b"execution_id"].decode() if fields.get(b"execution_id") else None),
        )

    def value(self, *, accept_pickle: bool) -> Any:
        """The return value (``None`` when none was stored)."""
        if self.raw_value is None:
            return None
        return serializers.loads(self.raw_value, accept_pickle=accept_pickle)[0]
