"""Request validation: a small JSON Schema subset, the same schemas the OpenAPI document publishes.

Every problem is collected (not just the first) as ``{"loc": [...], "msg": ..., "type": ...}``, the shape
FastAPI/pydantic clients already know, and raised together as :class:`ValidationFailed` (answered 422).

Supported keywords: ``type`` (a name or a list of names), ``enum``, ``properties``, ``required``,
``additionalProperties`` (a boolean), ``minLength``, ``maxLength``, ``pattern``, ``minimum``, ``maximum``,
``items``, ``maxItems``, ``maxProperties`` and ``format: date-time``; and two of ours: ``x-rule``, with which
every refusal of that value is worded (``must be <rule>, got <value>``, exactly as the task definition of
:mod:`asyncsched.scheduler._fields` words it for ``tasks.yaml``), and ``x-missing``, the message of a
required property that is absent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_to_bytes

from .._boundary import text_problem
from ..exceptions import ValidationFailed
from ..scheduler._fields import rule_message

__all__ = [
    "FieldError",
    "ValidationFailed",
    "coerce_query",
    "parse_datetime",
    "parse_query_string",
    "validate",
]

FieldError = dict[str, Any]
"""One problem: ``{"loc": ["body", "schedule"], "msg": "...", "type": "value_error"}``."""

Loc = tuple[str | int, ...]


def error(loc: Loc, msg: str, kind: str = "value_error") -> FieldError:
    """Build one :data:`FieldError`. Text that UTF-8 cannot carry (a lone surrogate echoed from the
    request in a key or message) is escaped, so the 422 itself can always be sent."""
    return {"loc": [_sendable(part) for part in loc], "msg": _sendable(msg), "type": kind}


def _sendable(part: Any) -> Any:
    if isinstance(part, str):
        try:
            part.encode("utf-8")
        except UnicodeEncodeError:
            return part.encode("utf-8", "backslashreplace").decode("utf-8")
    return part


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    """``pattern`` with JSON Schema's (ECMA 262) meaning of ``$``: the end of the text, which is Python's
    ``\\Z`` (Python's ``$`` also matches before a trailing newline, so ``"name\\n"`` would pass)."""
    return re.compile(_END_OF_TEXT.sub(lambda m: m.group(1) + r"\Z", pattern))


_END_OF_TEXT = re.compile(r"((?:^|[^\\])(?:\\\\)*)\$")
"""An unescaped ``$`` (outside character classes in the patterns used here)."""


def _type_ok(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    raise ValueError(f"unsupported schema type {name!r}")


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 date-time, as aware UTC; naive values are taken as UTC. Raises ``ValueError``, also
    for a time that has no UTC equivalent in years 1-9999 (``0001-01-01T00:00:00+14:00``)."""
    if not text or len(text) > 64:
        raise ValueError("not an ISO 8601 date-time")
    value = datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: its UTC time falls outside years 1-9999") from None


def validate(value: object, schema: Mapping[str, Any], loc: Loc = ("body",)) -> list[FieldError]:
    """Every problem of ``value`` against ``schema`` (empty when valid).

    Text anywhere in ``value`` (keys included) must not contain NUL characters, which databases refuse,
    nor lone surrogates (text that is not valid UTF-8). Nesting is bounded before this is called
    (:func:`asyncsched._boundary.loads_json`).
    """
    errors: list[FieldError] = []
    _check(value, schema, loc, errors)
    _no_nul(value, loc, errors)
    return errors


def _no_nul(value: Any, loc: Loc, errors: list[FieldError]) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            errors.append(error(loc, "NUL characters are not allowed"))
        problem = text_problem(value)
        if problem is not None:
            errors.append(error(loc, problem, "unicode_error"))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_nul(item, (*loc, index), errors)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, (*loc, key), errors)
            _no_nul(item, (*loc, key), errors)


def _check(value: Any, schema: Mapping[str, Any], loc: Loc, errors: list[FieldError]) -> None:
    first = len(errors)
    _check_value(value, schema, loc, errors)
    rule = schema.get("x-rule")
    if rule is not None:  # this value's own refusals (not those of nested items) in the field's words
        here = [_sendable(part) for part in loc]
        for problem in errors[first:]:
            if problem["loc"] == here:
                problem["msg"] = _sendable(rule_message(rule, value))


def _check_value(value: Any, schema: Mapping[str, Any], loc: Loc, errors: list[FieldError]) -> None:
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_type_ok(value, n) for n in names):
            errors.append(error(loc, f"expected {' or '.join(names)}", "type_error"))
            return
    if value is None:
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        errors.append(error(loc, f"must be one of {allowed}", "enum"))
        return
    if isinstance(value, str):
        _check_string(value, schema, loc, errors)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):  # a literal NaN or Infinity
            errors.append(error(loc, f"must be a finite number, got {value!r}"))
            return
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(error(loc, f"must be >= {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(error(loc, f"must be <= {schema['maximum']}"))
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(error(loc, f"at most {schema['maxItems']} items"))
        if "items" in schema:
            for index, item in enumerate(value):
                _check(item, schema["items"], (*loc, index), errors)
    elif isinstance(value, dict):
        _check_object(value, schema, loc, errors)


def _check_string(value: str, schema: Mapping[str, Any], loc: Loc, errors: list[FieldError]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(error(loc, "must not be empty" if schema["minLength"] == 1 else "too short"))
        return
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(error(loc, f"at most {schema['maxLength']} characters"))
        return
    if "pattern" in schema and not _compiled(schema["pattern"]).search(value):
        errors.append(error(loc, f"must match {schema['pattern']}"))
        return
    if schema.get("format") == "date-time":
        try:
            parse_datetime(value)
        except ValueError as exc:
            text = str(exc)
            errors.append(
                error(loc, text if text.startswith("out of range") else "not an ISO 8601 date-time")
            )


def _check_object(
    value: dict[str, Any], schema: Mapping[str, Any], loc: Loc, errors: list[FieldError]
) -> None:
    props: Mapping[str, Any] = schema.get("properties", {})
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(error(loc, f"at most {schema['maxProperties']} keys"))
    errors.extend(
        error((*loc, name), props.get(name, {}).get("x-missing", "field required"), "missing")
        for name in schema.get("required", ())
        if name not in value
    )
    for key, item in value.items():
        if key in props:
            _check(item, props[key], (*loc, key), errors)
        elif schema.get("additionalProperties", True) is False:
            errors.append(error((*loc, key), "unknown field", "extra_forbidden"))


def parse_query_string(raw: bytes) -> dict[str, str]:
    """The query string as strict UTF-8 name/value pairs. Raises :class:`ValidationFailed` naming every
    parameter that is not valid UTF-8 (percent-decoded) or is given more than once."""
    out: dict[str, str] = {}
    errors: list[FieldError] = []
    for part in raw.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name_bytes = unquote_to_bytes(raw_name.replace(b"+", b" "))
        value_bytes = unquote_to_bytes(raw_value.replace(b"+", b" "))
        name = name_bytes.decode("utf-8", "replace")[:100]
        try:
            name_bytes.decode("utf-8")
            value = value_bytes.decode("utf-8")
        except UnicodeDecodeError:
            errors.append(error(("query", name), "not valid UTF-8 (percent-decoded)", "unicode_error"))
            continue
        if name in out:
            errors.append(error(("query", name), "given more than once"))
            continue
        out[name] = value
    if errors:
        raise ValidationFailed(errors)
    return out


def coerce_query(
    params: Mapping[str, str], spec: Sequence[Mapping[str, Any]], path: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Typed values of the declared query (and ``path``) parameters (OpenAPI parameter objects).

    Raises :class:`ValidationFailed` listing every bad one, and every undeclared query parameter (a
    misspelt filter must not silently return everything). Missing optional ones are ``None`` (or the
    schema's ``default``). A parameter whose schema has ``x-alias-of`` is another name of that one: its
    value is returned under the main name (giving both with different values is an error).
    """
    path = path or {}
    out: dict[str, Any] = {}
    known = {p["name"] for p in spec if p.get("in") == "query"}
    expected = ", ".join(sorted(known)) or "none"
    errors: list[FieldError] = [
        error(("query", name), f"unknown query parameter (expected: {expected})", "extra_forbidden")
        for name in params
        if name not in known
    ]
    aliases: list[tuple[str, str]] = []
    for param in spec:
        if param.get("in") not in ("query", "path"):
            continue
        name: str = param["name"]
        schema: Mapping[str, Any] = param.get("schema", {})
        raw = params.get(name) if param["in"] == "query" else path.get(name)
        if "x-alias-of" in schema:
            aliases.append((name, schema["x-alias-of"]))
        if raw is None:
            if param.get("required"):
                errors.append(error(("query", name), "field required", "missing"))
            out[name] = schema.get("default")
            continue
        try:
            out[name] = _coerce_one(raw, schema, (param["in"], name))
        except ValidationFailed as exc:
            errors.extend(exc.errors)
    for alias, main in aliases:
        value = out.pop(alias, None)
        if value is None:
            continue
        if out.get(main) is not None and out[main] != value:
            errors.append(error(("query", alias), f"conflicts with {main!r} (give one of them)"))
        out[main] = value
    if errors:
        raise ValidationFailed(errors)
    return out


def _coerce_one(raw: str, schema: Mapping[str, Any], loc: Loc) -> Any:
    kind = schema.get("type")
    kind = next(t for t in kind if t != "null") if isinstance(kind, list) else kind
    value: Any = raw
    try:
        if kind == "integer":
            if len(raw) > 20:
                raise ValueError
            value = int(raw)
        elif kind == "number":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
        elif kind == "boolean":
            low = raw.lower()
            if low not in ("true", "false", "1", "0"):
                raise ValueError
            value = low in ("true", "1")
    except ValueError:
        raise ValidationFailed([error(loc, f"expected {kind}", "type_error")]) from None
    problems = validate(value, schema, loc)
    if problems:
        raise ValidationFailed(problems)
    if schema.get("format") == "date-time":
        value = parse_datetime(raw)
    return value
