"""One validation for every value that enters asyncsched (``docs/security.md``, DESIGN §9 "Boundaries").

The API (bodies and query strings), :meth:`TaskQueue.enqueue` (args and kwargs) and
:meth:`EventBus.publish` (payloads) all call these functions, so what is stored can always be read back:

* text is strict UTF-8: a lone surrogate (``"\\ud800"``, which JSON escapes can carry) is refused;
* nesting is bounded (:data:`MAX_DEPTH` levels of lists and objects);
* sizes are bounded by settings (``ASYNCSCHED_MAX_ARGS_BYTES``, ``ASYNCSCHED_MAX_PAYLOAD_BYTES``); an event's
  bound is checked here alone (:func:`event_size_problem`), by publishers and readers alike;
* JSON text has no ``NaN``/``Infinity`` literals.

Every refusal is an :class:`~asyncsched.exceptions.InvalidValue` whose ``field`` names the place
(``kwargs.to``, ``payload.items.3``). The checks are cheap on the common case (ASCII, shallow, small): the
hot paths (enqueue, publish) pay a few scans of bytes they already hold.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Iterable, Mapping
from itertools import accumulate
from typing import Any, cast

from ._json import JSONValue
from .exceptions import InvalidValue

__all__ = [
    "MAX_DEPTH",
    "PAYLOAD_SETTING",
    "SURROGATE",
    "Path",
    "check_event_text",
    "check_job_args",
    "check_size",
    "check_text",
    "check_value",
    "event_size_problem",
    "field_name",
    "find_problem",
    "loads_json",
    "text_problem",
]

MAX_DEPTH = 64
"""Deepest nesting of lists/objects accepted anywhere (JSON bodies, args, kwargs, payloads)."""

Path = tuple[str | int, ...]

SURROGATE = re.compile("[\ud800-\udfff]")
"""A surrogate code point: in decoded text, always a lone one (a pair decodes to one character)."""
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1 opens, -1 closes
_LONE = "contains a lone surrogate (text that is not valid UTF-8)"


def text_problem(value: str) -> str | None:
    """Why ``value`` is not storable text (``None`` when it is)."""
    if value.isascii() or SURROGATE.search(value) is None:
        return None
    return _LONE


def field_name(base: str, path: Path) -> str:
    """``kwargs`` + ``("to", 0)`` -> ``kwargs.to.0`` (a long path is cut after 8 steps)."""
    if len(path) > 8:
        path = (*path[:8], "...")
    return ".".join([base, *map(str, path)]) if base else ".".join(map(str, path))


def find_problem(value: object, *, max_depth: int = MAX_DEPTH) -> tuple[Path, str] | None:
    """The first place in ``value`` (lists, tuples, dicts, text) that is not storable, and why.

    Walks iteratively (no recursion limit to hit): lone surrogates in text and keys, nesting deeper than
    ``max_depth``. Other objects (numbers, or anything a pickle serializer takes) are not looked into.
    """
    stack: list[tuple[Any, Path, int]] = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and SURROGATE.search(item) is not None:
                return path, _LONE
        elif isinstance(item, _NonFinite):
            return path, f"{item.literal} is not a JSON number (only finite numbers are accepted)"
        elif isinstance(item, Mapping):
            if depth >= max_depth:
                return path, f"nested deeper than {max_depth} levels"
            for key, sub in item.items():
                if isinstance(key, str) and text_problem(key) is not None:
                    return (*path, key), f"key {_LONE}"
                stack.append((sub, (*path, key if isinstance(key, str | int) else repr(key)), depth + 1))
        elif isinstance(item, list | tuple):
            if depth >= max_depth:
                return path, f"nested deeper than {max_depth} levels"
            stack.extend((sub, (*path, i), depth + 1) for i, sub in enumerate(item))
    return None


def check_value(value: object, field: str, *, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`InvalidValue` naming the place in ``value`` that is not storable (see
    :func:`find_problem`)."""
    problem = find_problem(value, max_depth=max_depth)
    if problem is not None:
        path, reason = problem
        raise InvalidValue(field_name(field, path), reason)


def check_text(value: str, field: str) -> str:
    """``value`` if it is valid UTF-8 text, else :class:`InvalidValue`."""
    reason = text_problem(value)
    if reason is not None:
        raise InvalidValue(field, reason)
    return value


PAYLOAD_SETTING = "ASYNCSCHED_MAX_PAYLOAD_BYTES"
"""The one setting bounding an event envelope (payload included), for publishers and readers."""


def size_problem(size: int, limit: int, setting: str) -> str | None:
    """Why ``size`` bytes are refused (``None`` when within ``limit``); ``setting`` names the knob."""
    if size > limit:
        return f"is {size} bytes, more than the limit of {limit} bytes ({setting})"
    return None


def check_size(size: int, limit: int, field: str, setting: str) -> None:
    """Raise :class:`InvalidValue` when ``size`` bytes exceed ``limit`` (``setting`` names the knob)."""
    problem = size_problem(size, limit, setting)
    if problem is not None:
        raise InvalidValue(field, problem)


def event_size_problem(size: int, limit: int) -> str | None:
    """The one check of an event envelope's size against ``ASYNCSCHED_MAX_PAYLOAD_BYTES`` (``limit``):
    :meth:`EventBus.publish` refuses with it, readers skip or dead-letter a message from the wire with it."""
    return size_problem(size, limit, PAYLOAD_SETTING)


def _depth_exceeds(text: str, max_depth: int) -> bool:
    """Whether JSON ``text`` nests lists/objects deeper than ``max_depth`` (brackets inside strings do
    not count). Linear and C-level (a hostile megabyte costs about what parsing it would): a count first;
    then the bracket skeleton as +1/-1 bytes, a run of openers, and the running sum's maximum."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    skeleton = _JSON_STRING.sub("", text).encode("utf-8", "surrogatepass").translate(_STEPS, _NOT_BRACKET)
    if b"\x01" * (max_depth + 1) in skeleton:
        return True
    return max(accumulate(array("b", skeleton)), default=0) > max_depth


class _NonFinite:
    """Where a ``NaN``/``Infinity`` literal was parsed (found afterwards, so the refusal names its place)."""

    __slots__ = ("literal",)

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r} (which one counts would be a guess)")
            seen.add(key)
    return obj


def loads_json(raw: bytes | str, field: str = "body", *, max_depth: int = MAX_DEPTH) -> JSONValue:
    """Parse JSON strictly: UTF-8 only, no ``NaN``/``Infinity``, no duplicate keys, nesting bounded before
    parsing, no lone surrogates from ``\\u`` escapes. Raises :class:`InvalidValue` naming ``field`` (and
    the place)."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidValue(field, f"not valid UTF-8 (byte {exc.start})") from None
    else:
        text = check_text(raw, field)
    if _depth_exceeds(text, max_depth):
        raise InvalidValue(field, f"nested deeper than {max_depth} levels")
    try:
        value: object = json.loads(text, parse_constant=_NonFinite, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:
        raise InvalidValue(field, f"invalid JSON: {exc}") from None
    if isinstance(value, _NonFinite) or "\\u" in text or "NaN" in text or "Infinity" in text:
        # only escapes can bring a surrogate into decoded text; the literals are found where they are
        check_value(value, field, max_depth=max_depth + 1)
    return cast("JSONValue", value)  # what json.loads built, non-finite constants refused above


def check_job_args(
    args: Iterable[object], kwargs: object, raw: bytes, limit: int, *, json_ascii: bool
) -> None:
    """The args/kwargs of one job, serialized as ``raw`` (before compression): size, nesting, text.

    ``json_ascii``: ``raw`` is ASCII-escaped JSON, so a payload without ``\\ud`` escapes and with few
    brackets needs no walk (the common case costs two byte scans).
    """
    if len(raw) > limit:  # the check is inlined: this runs for every enqueued job
        check_size(len(raw), limit, "args/kwargs", "ASYNCSCHED_MAX_ARGS_BYTES")
    if json_ascii and b"\\ud" not in raw and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    check_value(list(args), "args")
    check_value(kwargs, "kwargs")


def check_event_text(payload: object, text: str, limit: int) -> None:
    """One event envelope ``text`` (JSON, not ASCII-escaped) carrying ``payload``: size, nesting, text."""
    if len(text) * 4 > limit:  # a UTF-8 character is at most 4 bytes: only then count the bytes
        problem = event_size_problem(len(text.encode("utf-8", "surrogatepass")), limit)
        if problem is not None:
            raise InvalidValue("payload", problem)
    ascii_only = text.isascii()
    if ascii_only and text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    check_value(payload, "payload")
    if not ascii_only and SURROGATE.search(text) is not None:  # not in the payload: in a name
        raise InvalidValue("event", f"event_type or an agent name {_LONE}")
