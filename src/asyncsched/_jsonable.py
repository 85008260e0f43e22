"""Plain JSON views of our objects, shared by the API's answers and the CLI's ``--json`` output."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import date, datetime, timedelta

__all__ = ["json_default", "plain"]


def plain(obj: object) -> object:
    """A JSON-able view of a dataclass, mapping or object with ``__dict__`` (shallow for objects)."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    return obj


def json_default(value: object) -> object:
    """``json.dumps(..., default=json_default)``: dates and times ISO 8601, durations in seconds, enums by
    value, sets and tuples as lists, bytes as text, dataclasses as objects, anything else ``repr``."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(value)
    return repr(value)
