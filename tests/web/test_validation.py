"""The request validator, the allow-list and the token check (no backends involved)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from starlette.requests import Request

from asyncsched.exceptions import FunctionNotAllowed
from asyncsched.web._security import check_function, function_allowed, token_ok
from asyncsched.web._spec import OPERATIONS, SCHEMAS, openapi_document
from asyncsched.web._validation import ValidationFailed, coerce_query, parse_datetime, validate


def locs(errors: list[dict[str, object]]) -> list[list[object]]:
    return [e["loc"] for e in errors]  # type: ignore[misc]


def test_valid_task_body_has_no_errors() -> None:
    body = {
        "name": "t1",
        "type": "cron",
        "schedule": "0 9 * * *",
        "function": "app.jobs:run",
        "kwargs": {"a": 1},
    }
    assert validate(body, SCHEMAS["TaskCreate"]) == []


def test_every_problem_is_reported_with_its_field() -> None:
    body = {"name": "", "type": "weekly", "function": "not a path", "enabled": "yes", "colour": "red"}
    errors = validate(body, SCHEMAS["TaskCreate"])
    assert sorted(map(str, locs(errors))) == sorted(
        map(
            str,
            [
                ["body", "schedule"],
                ["body", "name"],
                ["body", "type"],
                ["body", "function"],
                ["body", "enabled"],
                ["body", "colour"],
            ],
        )
    )
    by_field = {e["loc"][1]: e for e in errors}  # type: ignore[index]
    assert by_field["colour"]["msg"] == "unknown field"
    assert by_field["schedule"]["type"] == "missing"


def test_booleans_are_not_integers_and_nested_items_are_checked() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}, "l": {"type": "array", "items": {"type": "string"}}},
    }
    errors = validate({"n": True, "l": ["a", 3]}, schema)
    assert locs(errors) == [["body", "n"], ["body", "l", 1]]


def test_query_values_are_typed_and_bounded() -> None:
    spec = next(op for op in OPERATIONS if op.name == "list_executions").params
    values = coerce_query({"limit": "10", "since": "2026-01-02T03:04:05Z", "status": "failed"}, spec)
    assert values["limit"] == 10
    assert values["offset"] == 0
    assert values["since"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with pytest.raises(ValidationFailed) as info:
        coerce_query({"limit": "0", "offset": "x", "status": "nope", "since": "yesterday"}, spec)
    assert sorted(map(str, locs(info.value.errors))) == sorted(
        map(str, [["query", "limit"], ["query", "offset"], ["query", "status"], ["query", "since"]])
    )


def test_naive_datetimes_are_utc() -> None:
    assert parse_datetime("2026-05-01T10:00:00").tzinfo is UTC
    with pytest.raises(ValueError, match="ISO"):
        parse_datetime("")


@pytest.mark.parametrize(
    ("function", "allowed"),
    [
        ("app.services:f", True),
        ("app.services.email:g", True),
        ("app.servicesx:h", False),
        ("app:f", False),
        ("tasks.jobs:send", True),
        ("tasks.jobs:other", False),
        ("os:system", False),
    ],
)
def test_allow_list_matches_module_prefixes_and_exact_functions(function: str, allowed: bool) -> None:
    assert function_allowed(function, ["app.services", "tasks.jobs:send"]) is allowed


def test_star_allows_everything_and_empty_list_only_trusted_functions() -> None:
    assert function_allowed("os:system", ["*"])
    check_function("json:dumps", (), trusted={"json:dumps"})
    with pytest.raises(FunctionNotAllowed, match="no allow-list is set"):
        check_function("os:system", (), trusted={"json:dumps"})
    with pytest.raises(FunctionNotAllowed, match="not on the API allow-list"):
        check_function("os:system", ("app",), trusted=set())


def _request(authorization: str | None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "headers": headers, "method": "GET", "path": "/"})


def test_bearer_token_check() -> None:
    assert token_ok(_request(None), None)
    assert token_ok(_request("Bearer s3cret"), "s3cret")
    assert token_ok(_request("bearer s3cret"), "s3cret")
    assert not token_ok(_request(None), "s3cret")
    assert not token_ok(_request("Bearer wrong"), "s3cret")
    assert not token_ok(_request("Basic s3cret"), "s3cret")


def test_openapi_document_describes_every_operation() -> None:
    doc = openapi_document("/api/scheduler", secured=True)
    operations = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert operations == {(op.method, op.path) for op in OPERATIONS}
    assert doc["servers"] == [{"url": "/api/scheduler"}]
    assert "401" in doc["paths"]["/tasks"]["post"]["responses"]
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert "401" not in openapi_document()["paths"]["/tasks"]["post"]["responses"]
