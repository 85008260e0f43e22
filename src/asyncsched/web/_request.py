"""Reading a request's inputs: the body as bounded, strict JSON; the query and path parameters typed and
validated against the operation's schema. What is refused raises :class:`ValidationFailed` (422),
:class:`_TooLarge` (413) or :class:`_BadLength` (400), which the router answers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.requests import HTTPConnection, Request

from .._boundary import loads_json
from ..exceptions import AsyncschedError, InvalidValue
from ._spec import Operation
from ._validation import ValidationFailed, coerce_query, error, parse_query_string, validate

__all__ = ["MAX_BODY", "_BadLength", "_TooLarge", "field_loc", "read_inputs"]

MAX_BODY = 1_048_576
"""Largest request body accepted (bytes); larger ones get 413."""


class _TooLarge(AsyncschedError):
    """The request body is larger than ``MAX_BODY`` (answered 413)."""


class _BadLength(AsyncschedError):
    """The ``Content-Length`` header is not a number (answered 400)."""


def _declared_length(conn: HTTPConnection) -> int | None:
    """The ``Content-Length`` header's value; :class:`_BadLength` when it is not a number."""
    raw = conn.headers.get("content-length")
    if raw is None:
        return None
    if not raw.strip().isdigit() or len(raw) > 30:
        raise _BadLength
    return int(raw)


async def _read_json(request: Request) -> Any:
    """The body as JSON: the declared length decides 413 before anything is read; then strict UTF-8,
    bounded nesting, no NaN/Infinity (:func:`asyncsched._boundary.loads_json`)."""
    declared = _declared_length(request)
    if declared is not None and declared > MAX_BODY:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ValidationFailed([error(("body",), "a JSON body is required", "missing")])
    try:
        return loads_json(raw)
    except InvalidValue as exc:
        kind = "json_invalid" if exc.reason.startswith("invalid JSON") else "value_error"
        raise ValidationFailed([error(field_loc(exc.field), exc.reason, kind)]) from None


def field_loc(field: str) -> tuple[str | int, ...]:
    """``"body"``, ``"args.0"``, ``"kwargs.to"`` as a 422 ``loc`` under ``body``."""
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in field.split(".")]
    return tuple(parts) if parts[:1] == ["body"] else ("body", *parts)


async def read_inputs(
    op: Operation, body_schema: dict[str, Any] | None, request: Request
) -> tuple[dict[str, Any], Any]:
    """The operation's typed parameters and validated body; :class:`ValidationFailed`, ``_TooLarge``..."""
    declared = _declared_length(request)
    if declared is not None and declared > MAX_BODY:
        raise _TooLarge
    _check_path_utf8(request)
    query = parse_query_string(request.scope.get("query_string", b""))
    params = coerce_query(query, op.params, request.path_params)
    body: Any = None
    if body_schema is not None:
        body = await _read_json(request)
        problems = validate(body, body_schema)
        if problems:
            raise ValidationFailed(problems)
    return params, body


def _check_path_utf8(request: Request) -> None:
    """Path parameters must be percent-encoded UTF-8 (servers decode invalid bytes to U+FFFD silently)."""
    raw = request.scope.get("raw_path")
    if not raw or b"%" not in raw:
        return
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        names = [name for name, value in request.path_params.items() if "\ufffd" in str(value)] or ["path"]
        raise ValidationFailed(
            [error(("path", name), "not valid UTF-8 (percent-decoded)", "unicode_error") for name in names]
        ) from None
