"""The event envelope: what travels on the bus, as JSON.

One JSON object per event, the same text on pub/sub channels and in the durable streams::

    {"id": "<uuid hex>", "event_type": "task.completed", "source_agent": "email-agent",
     "target_agent": null, "payload": {...}, "created_at": "2026-01-01T09:00:00.123456+00:00"}

The attribute names are exactly those of the SQL model :class:`asyncsched.store.models.EventMessage`, so a
callback written against the spec's ``EventMessage`` works with an :class:`Event` unchanged.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .._boundary import event_size_problem
from ..config import get_settings
from ..exceptions import ConfigurationError, MalformedEvent, SerializationError

if TYPE_CHECKING:
    from ..store.models import EventMessage

__all__ = [
    "MAX_PAYLOAD_DEPTH",
    "Event",
    "MalformedEvent",
    "validate_agent_name",
    "validate_event_type",
]

MAX_PAYLOAD_DEPTH = 64
"""Deepest nesting of lists and objects inside a payload (the payload object itself is depth 1)."""

_MAX_ID = 200


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode  # built once: NaN/Infinity refused


def _depth(value: Any) -> int:
    """Nesting depth of lists/dicts in ``value`` (iterative: no recursion limit to hit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > deepest:
            deepest = level
            if deepest > MAX_PAYLOAD_DEPTH:
                return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _has_surrogate(value: Any) -> bool:
    """Whether any string (key or value) in ``value`` holds a lone surrogate (not valid UTF-8)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _check_payload_text(text: str, payload: Any) -> None:
    """Depth and UTF-8 checks, walking ``payload`` only when its JSON ``text`` makes them possible."""
    if text.count("[") + text.count("{") > MAX_PAYLOAD_DEPTH and _depth(payload) > MAX_PAYLOAD_DEPTH:
        raise MalformedEvent(f"payload: nested deeper than {MAX_PAYLOAD_DEPTH} levels")
    if "\\u" in text and _has_surrogate(payload):
        raise MalformedEvent("payload: a string holds a lone surrogate (not valid UTF-8)")


_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_loads = json.loads
_fromiso = datetime.fromisoformat
_encode_str = json.encoder.encode_basestring  # a JSON string literal (C implementation)
_random = random.Random()  # private: seeded from os.urandom, untouched by random.seed() in user code
_getrandbits = _random.getrandbits
os.register_at_fork(after_in_child=_random.seed)  # a forked child must not repeat its parent's ids
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _new_id() -> str:
    """A random (version 4) UUID as 32 hex digits, like ``uuid.uuid4().hex`` but without a system call
    per id: ids need uniqueness, not secrecy (a private generator seeded from ``os.urandom``, reseeded in
    forked children)."""
    return f"{_getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"


_NAME = re.compile(r"[^\s*?\[\]]{1,200}")  # an event type or an agent name


_valid_names: set[str] = set()
"""Event types and agent names validated already (publishing the same few names is the common case)."""
_VALID_NAMES_MAX = 4096


def _remember(name: str) -> None:
    if len(_valid_names) >= _VALID_NAMES_MAX:
        _valid_names.clear()
    _valid_names.add(name)


def validate_event_type(event_type: object) -> str:
    """``event_type`` if it is a valid concrete event type, else :class:`ConfigurationError` (a ValueError).

    Valid: 1-200 characters, no whitespace and no wildcard characters (``* ? [ ]``, which only
    subscriptions use). By convention ``{agent}.{action}``, ``task.{status}``, ``system.{event}``.
    """
    return _checked(event_type, "event_type", "'email.processed', 'task.completed'")


def validate_agent_name(name: object, field: str = "agent_name") -> str:
    """``name`` if it is a valid agent name (1-200 characters, no whitespace, no ``* ? [ ]``)."""
    return _checked(name, field, "'email-agent'")


def _checked(value: object, field: str, examples: str) -> str:
    """``value`` if it is a valid name (remembered, so the next check is one set lookup)."""
    if type(value) is str and value in _valid_names:
        return value
    if not isinstance(value, str) or _NAME.fullmatch(value) is None:
        raise ConfigurationError(
            f"invalid {field} {value!r}: use 1-200 characters without whitespace or wildcards "
            f"(e.g. {examples})"
        )
    _remember(value)
    return value


@dataclass(frozen=True, slots=True)
class Event:
    """One event. Immutable; build it with :meth:`create` (validates) or :meth:`from_json`.

    ``target_agent`` is ``None`` for a broadcast. ``payload`` is a JSON object (a ``dict``);
    ``created_at`` is an aware UTC datetime.
    """

    id: str
    event_type: str
    source_agent: str
    target_agent: str | None
    payload: dict[str, Any]
    created_at: datetime

    @classmethod
    def create(
        cls,
        event_type: str,
        source_agent: str,
        payload: Mapping[str, Any] | None = None,
        target_agent: str | None = None,
    ) -> Event:
        """A new event with a fresh id and the current time. Validates names; the payload is checked by
        :meth:`to_json` (which :meth:`EventBus.publish` calls before sending anything)."""
        validate_event_type(event_type)
        validate_agent_name(source_agent, "source_agent")
        if target_agent is not None:
            validate_agent_name(target_agent, "target_agent")
        if payload is None:
            payload = {}
        elif not isinstance(payload, Mapping):
            raise SerializationError(
                f"event payload for {event_type!r} must be a JSON object (a dict), "
                f"got {type(payload).__name__}"
            )
        return cls(_new_id(), event_type, source_agent, target_agent, dict(payload), datetime.now(UTC))

    @property
    def is_broadcast(self) -> bool:
        """True when the event has no target agent."""
        return self.target_agent is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``created_at`` as ISO 8601 text)."""
        return {
            "id": self.id,
            "event_type": self.event_type,
            "source_agent": self.source_agent,
            "target_agent": self.target_agent,
            "payload": self.payload,
            "created_at": self.created_at.isoformat(),
        }

    def to_json(self) -> str:
        """The wire envelope. Raises :class:`SerializationError` if the payload is not JSON-serializable,
        nested deeper than :data:`MAX_PAYLOAD_DEPTH` or not valid UTF-8. Its size is checked against
        ``ASYNCSCHED_MAX_PAYLOAD_BYTES`` by :meth:`EventBus.publish` (``asyncsched._boundary``), the one
        place that bound is checked on the way out."""
        target = self.target_agent
        try:  # built by hand: the names are plain strings, only the payload needs the general encoder
            payload = _dumps(self.payload)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"event payload for {self.event_type!r} cannot be serialized as JSON ({exc}); use dicts with "
                "str keys, lists, str, int, finite float, bool and None (convert datetimes, sets, objects)"
            ) from None
        except RecursionError:
            raise SerializationError(
                f"event payload for {self.event_type!r}: nested deeper than {MAX_PAYLOAD_DEPTH} levels"
            ) from None
        text = (
            f'{{"id":{_encode_str(self.id)},"event_type":{_encode_str(self.event_type)},'
            f'"source_agent":{_encode_str(self.source_agent)},'
            f'"target_agent":{"null" if target is None else _encode_str(target)},'
            f'"payload":{payload},"created_at":"{self.created_at.isoformat()}"}}'
        )
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError:
                raise SerializationError(
                    f"event payload for {self.event_type!r}: a string holds a lone surrogate (invalid UTF-8)"
                ) from None
        if (
            payload.count("[") + payload.count("{") > MAX_PAYLOAD_DEPTH
            and _depth(self.payload) > MAX_PAYLOAD_DEPTH
        ):
            raise SerializationError(
                f"event payload for {self.event_type!r}: nested deeper than {MAX_PAYLOAD_DEPTH} levels"
            )
        return text

    @classmethod
    def from_json(cls, data: str | bytes, *, max_bytes: int | None = None) -> Event:
        """Parse and validate a wire envelope; :class:`MalformedEvent` (a ``ValueError``) names what is
        wrong: size (``max_bytes``, by default the ``ASYNCSCHED_MAX_PAYLOAD_BYTES`` setting; checked before
        parsing), JSON, nesting (:data:`MAX_PAYLOAD_DEPTH`), a field's type or form, a lone surrogate.
        Never raises anything else. Readers pass their bus's setting."""
        if not isinstance(data, str | bytes | bytearray | memoryview):
            raise MalformedEvent(f"message is a {type(data).__name__}, not JSON text")
        limit = get_settings().max_payload_bytes if max_bytes is None else max_bytes
        too_big = event_size_problem(len(data), limit)  # (a str's UTF-8 size is at least its length)
        if too_big is None and isinstance(data, str) and not data.isascii():  # text from Python: check it
            try:
                data = data.encode()
            except UnicodeEncodeError:
                raise MalformedEvent("message holds a lone surrogate (not valid UTF-8)") from None
            too_big = event_size_problem(len(data), limit)
        if too_big is not None:
            raise MalformedEvent(f"message {too_big}")
        try:
            if not isinstance(data, str):
                data = bytes(data).decode()  # strict UTF-8 (json.loads would let surrogates pass)
            d = _decode(data)
        except RecursionError:
            raise MalformedEvent("message: JSON nested too deeply") from None
        except ValueError as exc:  # includes UnicodeDecodeError
            raise MalformedEvent(f"message is not valid JSON ({exc})") from None
        if not isinstance(d, dict):
            raise MalformedEvent(f"message is a JSON {type(d).__name__}, not an object")
        try:
            return cls._from_dict(d, data)
        except MalformedEvent:
            raise
        except KeyError as exc:
            raise MalformedEvent(f"field {exc.args[0]!r} is missing") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise MalformedEvent(str(exc)) from None

    @classmethod
    def _from_dict(cls, d: dict[str, Any], data: str) -> Event:
        event_id = d["id"]
        if not isinstance(event_id, str) or not 0 < len(event_id) <= _MAX_ID:
            raise MalformedEvent(
                f"field 'id' must be a string of 1-{_MAX_ID} characters, got {event_id!r:.80}"
            )
        event_type = validate_event_type(d["event_type"])
        source = validate_agent_name(d["source_agent"], "source_agent")
        target = d["target_agent"]
        if target is not None:
            validate_agent_name(target, "target_agent")
        payload = d["payload"]
        if not isinstance(payload, dict):
            raise MalformedEvent(f"field 'payload' must be a JSON object, got {type(payload).__name__}")
        _check_payload_text(data, payload)
        created_text = d["created_at"]
        if not isinstance(created_text, str):
            raise MalformedEvent(
                f"field 'created_at' must be ISO 8601 text, got {type(created_text).__name__}"
            )
        try:
            created = _fromiso(created_text)
            created = created.replace(tzinfo=UTC) if created.tzinfo is None else created.astimezone(UTC)
        except (ValueError, OverflowError):
            raise MalformedEvent(
                f"field 'created_at' is not a valid ISO 8601 time: {created_text!r:.80}"
            ) from None
        return cls(event_id, event_type, source, target, payload, created)

    def log_fields(self) -> dict[str, str]:
        """Fields of this event in the persisted event log stream (read by the store's Recorder):
        ``id, event_type, source_agent, target_agent`` (omitted for a broadcast), ``payload`` (JSON
        text) and ``created_at`` (ISO 8601)."""
        fields = {
            "id": self.id,
            "event_type": self.event_type,
            "source_agent": self.source_agent,
            "payload": _dumps(self.payload),
            "created_at": self.created_at.isoformat(),
        }
        if self.target_agent is not None:
            fields["target_agent"] = self.target_agent
        return fields

    def to_model(self) -> EventMessage:
        """The SQL row for this event (:class:`asyncsched.store.models.EventMessage`)."""
        from ..store.models import EventMessage

        return EventMessage(
            id=self.id,
            event_type=self.event_type,
            source_agent=self.source_agent,
            target_agent=self.target_agent,
            payload=dict(self.payload),
            created_at=self.created_at,
        )

    @classmethod
    def from_model(cls, row: EventMessage) -> Event:
        """The event of a persisted SQL row (naive timestamps, as SQLite returns them, are taken as UTC)."""
        created = row.created_at
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return cls(
            row.id, row.event_type, row.source_agent, row.target_agent, dict(row.payload or {}), created
        )
