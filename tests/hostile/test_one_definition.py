"""One task definition (``scheduler/_fields.TABLE``) from which the API's schema, the Python checks and the
messages are all derived.

Every constraint of every field is published in the OpenAPI document as the table states it, and a value
breaking it is refused with the *same message* by the definition check (code), a task file (with file,
line and field) and the API (422 whose ``loc`` is the field). The violating values are generated from the
table, so a constraint added to it is covered here without a new test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asyncsched.scheduler._definition import validate_definition
from asyncsched.scheduler._fields import TABLE, Field, rule_message
from asyncsched.scheduler._yaml import validate_file
from asyncsched.web._spec import openapi_document
from asyncsched.web._validation import validate

from ..web.conftest import RuntimeThread
from .test_task_schema import BASE, _post, served

__all__ = ["served"]  # the module-scoped API of test_task_schema, shared

_KEYWORDS = {
    "pattern": "pattern",
    "min_length": "minLength",
    "max_length": "maxLength",
    "minimum": "minimum",
    "maximum": "maximum",
    "max_items": "maxItems",
    "max_properties": "maxProperties",
    "format": "format",
    "default": "default",
}


def test_every_field_is_published_with_the_constraints_of_the_table() -> None:
    schema = openapi_document()["components"]["schemas"]["TaskCreate"]
    props = schema["properties"]
    assert set(props) == {f.name for f in TABLE} | {"agent_name"}
    assert set(schema["required"]) == {f.name for f in TABLE if f.required}
    assert schema["additionalProperties"] is False
    for f in TABLE:
        published = props[f.name]
        types = published["type"] if isinstance(published["type"], list) else [published["type"]]
        assert types == list(f.types), f.name
        assert published.get("enum") == (list(f.enum) if f.enum else None), f.name
        for attr, keyword in _KEYWORDS.items():
            assert published.get(keyword) == getattr(f, attr), (f.name, keyword)
        assert published["description"] == f.doc
        assert published["x-rule"] == f.rule
        assert published.get("x-missing") == f.missing


_SAMPLES: list[tuple[str, Any]] = [
    ("boolean", True),
    ("integer", 7),
    ("number", 1.5),
    ("string", "text"),
    ("array", [1]),
    ("object", {"a": 1}),
]


def _violations(f: Field) -> list[tuple[str, Any]]:
    """One value per constraint of ``f`` that breaks it (and only the table's constraints)."""
    out: list[tuple[str, Any]] = []
    accepted = set(f.types) | ({"number"} if "integer" in f.types else set())
    wrong = next(v for t, v in _SAMPLES if t not in accepted and not (t == "integer" and "number" in f.types))
    out.append(("type", wrong))
    if f.enum:
        out.append(("enum", "nope"))
    if f.min_length:
        out.append(("minLength", "x" * (f.min_length - 1)))
    if f.max_length:
        out.append(("maxLength", "x" * (f.max_length + 1)))
    if f.pattern:
        out.append(("pattern", "a b"))
    if f.minimum is not None:
        out.append(("minimum", int(f.minimum) - 1))
    if f.maximum is not None:
        out.append(("maximum", int(f.maximum) + 1))
    if f.max_items is not None:
        out.append(("maxItems", list(range(f.max_items + 1))))
    if f.max_properties is not None:
        out.append(("maxProperties", {f"k{i}": i for i in range(f.max_properties + 1)}))
    if f.format == "date-time":
        out.append(("format", "soon"))
    return out


CASES = [(f.name, value) for f in TABLE for _, value in _violations(f)]
IDS = [f"{f.name}-{what}" for f in TABLE for what, _ in _violations(f)]
RULES = {f.name: f.rule for f in TABLE}


def test_every_field_has_a_violation_per_constraint() -> None:
    assert {name for name, _ in CASES} == set(RULES)
    assert len(CASES) >= 2 * len(TABLE)


@pytest.mark.parametrize(("field", "value"), CASES, ids=IDS)
def test_code_and_schema_refuse_with_the_same_message(field: str, value: Any) -> None:
    expected = rule_message(RULES[field], value)
    body = {**BASE, field: value}
    _, problems = validate_definition(body)
    assert [(p.field, p.message) for p in problems] == [(field, expected)]
    errors = validate(body, openapi_document()["components"]["schemas"]["TaskCreate"])
    assert [(e["loc"], e["msg"]) for e in errors] == [(["body", field], expected)]


@pytest.mark.parametrize(("field", "value"), CASES, ids=IDS)
def test_task_files_refuse_with_file_line_field_and_the_same_message(
    tmp_path: Path, field: str, value: Any
) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(f"tasks:\n  - {json.dumps({**BASE, field: value})}\n", encoding="utf-8")
    tasks, problems = validate_file(path, "a")
    assert tasks == []
    expected = rule_message(RULES[field], value)
    assert [(p.file, p.line, p.field, p.message) for p in problems] == [(str(path), 2, field, expected)]


@pytest.mark.parametrize(("field", "value"), CASES, ids=IDS)
def test_the_api_refuses_with_422_the_field_and_the_same_message(
    served: RuntimeThread, field: str, value: Any
) -> None:
    response = _post(served, {**BASE, field: value})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [(e["loc"], e["msg"]) for e in detail] == [(["body", field], rule_message(RULES[field], value))]


@pytest.mark.parametrize("field", [f.name for f in TABLE if f.required])
def test_a_missing_required_field_has_one_message_everywhere(
    tmp_path: Path, served: RuntimeThread, field: str
) -> None:
    body = {k: v for k, v in BASE.items() if k != field}
    missing = next(f.missing for f in TABLE if f.name == field)
    assert [(p.field, p.message) for p in validate_definition(body)[1]] == [(field, missing)]
    path = tmp_path / "tasks.yaml"
    path.write_text(f"tasks:\n  - {json.dumps(body)}\n", encoding="utf-8")
    assert [(p.field, p.message) for p in validate_file(path, "a")[1]] == [(field, missing)]
    response = _post(served, body)
    assert response.status_code == 422, response.text
    assert [(e["loc"], e["msg"]) for e in response.json()["detail"]] == [(["body", field], missing)]


# Checks the table cannot state (a time zone that does not exist, a schedule that does not parse, a start
# in the past of what a date task allows...) are made by the one definition check; the API answers them
# with its words too, on the field.
SEMANTIC: list[tuple[str, dict[str, Any]]] = [
    ("timezone", {"timezone": "Mars/Olympus_Mons"}),
    ("timezone", {"timezone": "../../etc/passwd"}),
    ("schedule", {"schedule": "every blue moon"}),
    ("schedule", {"type": "cron", "schedule": "61 * * * *"}),
]


@pytest.mark.parametrize(("field", "overrides"), SEMANTIC, ids=[f"{f}-{o}" for f, o in SEMANTIC])
def test_semantic_problems_have_one_message_everywhere(
    tmp_path: Path, served: RuntimeThread, field: str, overrides: dict[str, Any]
) -> None:
    body = {**BASE, **overrides}
    problems = validate_definition(body)[1]
    assert [p.field for p in problems] == [field]
    expected = [(field, p.message) for p in problems]
    path = tmp_path / "tasks.yaml"
    path.write_text(f"tasks:\n  - {json.dumps(body)}\n", encoding="utf-8")
    assert [(p.field, p.message) for p in validate_file(path, "a")[1]] == expected
    response = _post(served, body)
    assert response.status_code == 422, response.text
    assert [(e["loc"][-1], e["msg"]) for e in response.json()["detail"]] == expected
