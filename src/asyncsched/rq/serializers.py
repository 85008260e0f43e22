"""Serializers of RQ's job payloads: JSON (our default) and pickle (RQ's default, only when accepted).

A payload never records its serializer (RQ agrees on it out of band), so :func:`detect` tells them apart
without unpickling: a pickle starts with the PROTO opcode ``0x80`` (protocol >= 2), JSON with ``[``/``{``
or another JSON token. Unpickling data from Redis executes code; :func:`loads` refuses it unless the caller
says pickle is accepted.
"""

from __future__ import annotations

import enum
import json
import pickle
from typing import Any

from ..exceptions import SerializationError, UnsafeJob

__all__ = ["Format", "detect", "dumps", "loads"]

_JSON = json.JSONEncoder(allow_nan=False)  # json.dumps(v, allow_nan=False) without an encoder per call


class Format(enum.StrEnum):
    """The serializer of a payload."""

    JSON = "json"
    PICKLE = "pickle"


def detect(payload: bytes) -> Format:
    """Which serializer produced ``payload`` (already decompressed); never unpickles."""
    head = payload[:1]
    if head == b"\x80":
        return Format.PICKLE
    stripped = payload.lstrip()[:1]
    if stripped in (b"[", b"{", b'"', b"n", b"t", b"f", b"-") or stripped.isdigit():
        return Format.JSON
    # Protocol 0/1 pickles have no header; anything else that is not JSON is treated as pickle (refused).
    return Format.PICKLE


def dumps(value: object, fmt: Format | str) -> bytes:
    """Serialize ``value``; raises :class:`SerializationError` naming the offending type."""
    if fmt == Format.PICKLE:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise SerializationError(f"cannot pickle {type(value).__name__}: {exc}") from None
    try:
        return _JSON.encode(value).encode()
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"cannot serialize to JSON: {exc}; pass JSON types (str, int, float, bool, None, list, dict) "
            "or use the pickle serializer"
        ) from None


def loads(payload: bytes, *, accept_pickle: bool) -> tuple[Any, Format]:
    """Deserialize ``payload``, returning the value and its format. Pickle only if ``accept_pickle``."""
    fmt = detect(payload)
    if fmt == Format.PICKLE:
        if not accept_pickle:
            what = (
                "payload is pickled"
                if payload[:1] == b"\x80"
                else "payload is neither JSON nor a pickle with a protocol header (corrupt, or an old "
                "protocol 0/1 pickle)"
            )
            raise UnsafeJob(
                f"{what} and this process does not accept pickle "
                "(set ASYNCSCHED_ACCEPT_PICKLE=true or --accept-pickle only if every producer is trusted)"
            )
        return pickle.loads(payload), fmt
    return json.loads(payload), fmt
