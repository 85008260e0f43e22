"""Text of Redis replies and event-log entries for the history: decoded, clipped to their columns."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, overload

from .._lifecycle import RESULT_CAP
from .models import EventMessage, utcnow

__all__ = ["clip", "column_length", "decode_event", "result_json", "stream_items", "text"]


def text(value: bytes | str) -> str:
    """Text of a Redis reply; undecodable bytes (garbage XADDed by hand) become U+FFFD, never an error."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def column_length(table: Any, column: str) -> int | None:
    length: int | None = getattr(table.c[column].type, "length", None)
    return length


@overload
def clip(value: str, length: int | None) -> str: ...
@overload
def clip(value: str | None, length: int | None) -> str | None: ...
def clip(value: str | None, length: int | None) -> str | None:
    """Fit a text column: without NUL characters (PostgreSQL refuses them) and cut to ``length``."""
    if value is None:
        return None
    if "\x00" in value:
        value = value.replace("\x00", "")
    if length is None or len(value) <= length:
        return value
    return value[:length]


def result_json(raw: str | None) -> str | None:
    """The JSON text stored for a record's result: as is when it is JSON, else as a JSON string."""
    if raw is None:
        return None
    if len(raw) > RESULT_CAP:
        return json.dumps({"truncated": True, "preview": raw[: RESULT_CAP - 64]})
    try:
        json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse: kept as text
        return json.dumps(raw)
    return raw


def _parse_time(value: str) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except ValueError:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def decode_event(fields: Mapping[str, str]) -> dict[str, Any]:
    """An ``EventMessage`` row from an event-log entry (flat fields, or one JSON field holding them)."""
    data: dict[str, Any] = dict(fields)
    if "id" not in data and len(data) == 1:
        data = json.loads(next(iter(data.values())))
        if not isinstance(data, dict):
            raise ValueError(f"event envelope is a JSON {type(data).__name__}, not an object")
    payload = data.get("payload")
    if isinstance(payload, str):
        payload = json.loads(payload) if payload else {}
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        payload = {"value": payload}
    created = data.get("created_at")
    table = EventMessage.__table__
    return {
        "id": clip(str(data["id"]), column_length(table, "id")),
        "event_type": clip(str(data["event_type"]), column_length(table, "event_type")),
        "source_agent": clip(str(data["source_agent"]), column_length(table, "source_agent")),
        "target_agent": clip(data.get("target_agent") or None, column_length(table, "target_agent")),
        "payload": payload,
        "created_at": _parse_time(str(created)) if created else utcnow(),
    }


def stream_items(reply: Any) -> list[tuple[str, Any]]:
    """``(stream, entries)`` of an XREAD/XREADGROUP reply, RESP2 or RESP3."""
    items: Any = reply.items() if isinstance(reply, dict) else (reply or [])
    out = []
    for stream, entries in items:
        if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], list):
            entries = entries[0]  # RESP3 wraps entries once more
        out.append((text(stream), entries or []))
    return out
