"""One task definition for YAML and the API: same fields, limits and patterns; bounded numbers and dates.

Every hostile value is refused by both entries with the field named: the API answers 422 whose ``loc``
ends in the field, a task file reports ``field '<name>'`` on the value's line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings
from asyncsched.scheduler._definition import validate_definition
from asyncsched.scheduler._fields import FIELDS, LIMITS, task_schema
from asyncsched.scheduler._yaml import validate_file
from asyncsched.web._spec import SCHEMAS
from asyncsched.web._validation import validate

from ..web.conftest import RuntimeThread

S = "tests.hostile.funcapp.services"
BASE: dict[str, Any] = {"name": "t", "type": "interval", "schedule": "1 hour", "function": f"{S}:touch"}

# (field, value, overrides of BASE): each must be refused naming ``field``.
HOSTILE: list[tuple[str, Any, dict[str, Any]]] = [
    ("schedule", "1000000000000 seconds", {}),
    ("schedule", "1000000000000 weeks", {}),
    ("schedule", "1" * 400 + " seconds", {}),
    ("schedule", "0001-01-01T00:00:00+14:00", {"type": "date"}),
    ("schedule", "9999-12-31T23:59:59-14:00", {"type": "date"}),
    ("schedule", "1900-01-01T00:00:00", {"type": "date"}),
    ("start", "0001-01-01T00:00:00+14:00", {}),
    ("start", "9999-12-31T23:59:59-14:00", {}),
    ("jitter", 1e308, {}),
    ("jitter", math.nan, {}),
    ("jitter", math.inf, {}),
    ("jitter", "8 days", {}),
    ("timeout", 10**12, {}),
    ("timeout", -math.inf, {}),
    ("timeout", "1000000000000 weeks", {}),
    ("timeout", 0, {}),
    ("misfire_grace", 10**12, {}),
    ("retry", 101, {}),
    ("retry", {"max": 1, "interval": 10**12}, {}),
    ("retry", {"max": 1, "interval": [1] * 101}, {}),
    ("retry", {"max": 10**12}, {}),
    ("retry", -1, {}),
    ("description", "x" * 2001, {}),
    ("description", "a\x00b", {}),
    ("name", ".hidden", {}),
    ("name", "-dash", {}),
    ("name", "x\n", {}),
    ("name", "x" * 201, {}),
    ("name", "\ud800", {}),
    ("queue", "q\n", {}),
    ("queue", ".q", {}),
    ("function", f"{S}:touch\n", {}),
    ("function", f"{S}:os.system", {}),
    ("timezone", "", {}),
    ("timezone", "../../etc/passwd", {}),
    ("timezone", "x" * 65, {}),
    ("kwargs", {"a": "\ud800"}, {}),
    ("kwargs", {"\ud800": 1}, {}),
    ("kwargs", {"a": math.nan}, {}),
    ("kwargs", {"a": "\x00"}, {}),
    ("args", [math.inf], {}),
    ("args", [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]], {}),
    ("args", list(range(101)), {}),
    ("kwargs", {str(i): i for i in range(101)}, {}),
    ("kwargs", {"a": "x" * (LIMITS["value_bytes"] + 1)}, {}),
]
IDS = [f"{field}-{i}" for i, (field, _, _) in enumerate(HOSTILE)]


def _body(field: str, value: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    return {**BASE, **overrides, field: value}


@pytest.mark.parametrize(("field", "value", "overrides"), HOSTILE, ids=IDS)
def test_task_definition_refuses_naming_the_field(field: str, value: Any, overrides: dict[str, Any]) -> None:
    """The rule every entry applies (task files, code, and the API after its schema)."""
    _, problems = validate_definition(_body(field, value, overrides))
    assert problems, (field, value)
    assert {p.field for p in problems} == {field}, problems
    assert all("\n" not in str(p) for p in problems)


@pytest.mark.parametrize(("field", "value", "overrides"), HOSTILE, ids=IDS)
def test_task_files_refuse_naming_file_line_and_field(
    tmp_path: Path, field: str, value: Any, overrides: dict[str, Any]
) -> None:
    path = tmp_path / "tasks.yaml"
    body = _body(field, value, overrides)
    # JSON is YAML (flow style); non-finite numbers in YAML's own spelling.
    text = json.dumps(body).replace("NaN", ".nan").replace("-Infinity", "-.inf").replace("Infinity", ".inf")
    path.write_text(f"tasks:\n  - {text}\n", encoding="utf-8")
    tasks, problems = validate_file(path, "a")
    assert tasks == []
    assert [(p.file, p.line, p.field) for p in problems] == [(str(path), 2, field)], problems


def test_the_api_schema_is_derived_from_the_one_definition() -> None:
    assert SCHEMAS["TaskCreate"] == task_schema()
    assert set(SCHEMAS["TaskCreate"]["properties"]) == set(FIELDS) | {"agent_name"}
    props = SCHEMAS["TaskCreate"]["properties"]
    assert props["retry"]["maximum"] == LIMITS["retry"]
    assert props["description"]["maxLength"] == LIMITS["description"]
    assert props["timeout"]["maximum"] == LIMITS["timeout"]
    assert props["name"]["maxLength"] == LIMITS["name"]
    assert props["args"]["maxItems"] == LIMITS["args"]


# -- the API, served -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeThread]:
    tmp = tmp_path_factory.mktemp("hostile-schema")
    reset_memory_servers()
    config = Settings(
        redis_url="memory://hostile-schema",
        database_url=f"sqlite+aiosqlite:///{tmp}/api.db",
        allowed_functions=(S,),
        agent="hostile",
    )
    with RuntimeThread(config, []) as server:
        yield server
    reset_memory_servers()


def _post(served: RuntimeThread, body: dict[str, Any]) -> httpx.Response:
    # allow_nan: a literal NaN/Infinity in the body, as a careless client sends it.
    raw = json.dumps(body, allow_nan=True)
    headers = {"content-type": "application/json"}
    return httpx.post(f"{served.url}/tasks", content=raw.encode(), headers=headers, timeout=30)


def _named(response: httpx.Response, field: str) -> bool:
    return any(e["loc"][:2] == ["body", field] for e in response.json()["detail"])


@pytest.mark.parametrize(("field", "value", "overrides"), HOSTILE, ids=IDS)
def test_api_answers_422_naming_the_field(
    served: RuntimeThread, field: str, value: Any, overrides: dict[str, Any]
) -> None:
    response = _post(served, _body(field, value, overrides))
    assert response.status_code == 422, response.text
    assert _named(response, field), response.text


def test_a_422_that_echoes_a_lone_surrogate_can_be_sent(served: RuntimeThread) -> None:
    """Found by the property below: the error's loc echoed a dict key holding '\\ud800' (a 500)."""
    response = _post(served, {**BASE, "enabled": {"\ud800": "a\x00"}})
    assert response.status_code == 422, response.text
    assert _named(response, "enabled"), response.text


def test_limits_are_the_same_for_yaml_and_api(served: RuntimeThread) -> None:
    """The issue's differences: retry count, timeout, description length, a leading '.' or '-'."""
    at_limit = {
        "retry": LIMITS["retry"],
        "timeout": LIMITS["timeout"],
        "description": "x" * LIMITS["description"],
        "name": "_" + "x" * (LIMITS["name"] - 1),
    }
    body = {**BASE, **at_limit}
    assert validate_definition(body)[1] == []
    response = _post(served, body)
    assert response.status_code == 201, response.text
    assert httpx.delete(f"{served.url}/tasks/{response.json()['id']}", timeout=30).status_code == 204


# -- properties ---------------------------------------------------------------------------------------------

_text = st.text(max_size=40)
_hostile_text = st.sampled_from(["", ".x", "-x", "x\n", "\ud800", "a\x00", "x" * 300, "1e308", "NaN"])
_numbers = st.one_of(
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 100, 101, 604800, 604801, 10**12]),
)
_json = st.recursive(
    st.none() | st.booleans() | _numbers | _text | _hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text | _hostile_text, inner, max_size=4),
    max_leaves=20,
)
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}\Z") | _hostile_text,
    "description": _text | _hostile_text | st.none(),
    "enabled": st.booleans() | _json,
    "type": st.sampled_from(["interval", "cron", "date", "weekly"]),
    "schedule": st.sampled_from(
        [
            "5 minutes",
            "0 9 * * *",
            "@daily",
            "2027-01-01T00:00:00Z",
            "0001-01-01T00:00:00+14:00",
            "1000000000000 weeks",
            "61 * * * *",
            "0 seconds",
        ]
    )
    | _text,
    "function": st.sampled_from([f"{S}:touch", f"{S}:os.system", f"{S}:touch\n", "os:system", "x:y"]),
    "args": st.lists(_json, max_size=5) | _json,
    "kwargs": st.dictionaries(_text, _json, max_size=5) | _json,
    "queue": st.sampled_from(["default", "q.1", ".q", "q\n"]) | _text,
    "timezone": st.sampled_from(["UTC", "Europe/Berlin", "", "Mars/Olympus", "../etc"]) | _text,
    "timeout": _numbers | _hostile_text | st.sampled_from(["5 minutes", "8 days"]),
    "retry": _numbers | _json | st.fixed_dictionaries({"max": _numbers, "interval": _numbers | _json}),
    "jitter": _numbers | _hostile_text | st.sampled_from(["30 seconds"]),
    "misfire": st.sampled_from(["coalesce", "skip", "all", "never"]) | _json,
    "overlap": st.sampled_from(["skip", "queue", "allow", "Skip", "skip\n"]) | _json,
    "misfire_grace": _numbers | _hostile_text,
    "start": st.sampled_from(["2026-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "soon"]) | _json,
}
_bodies = st.fixed_dictionaries(
    {"name": _FIELD_VALUES["name"], "type": _FIELD_VALUES["type"]},
    optional={k: v for k, v in _FIELD_VALUES.items() if k not in ("name", "type")},
)


@given(body=_bodies)
@settings(max_examples=300, deadline=None, database=None)
def test_definition_never_raises_and_names_a_field_and_the_schema_is_no_stricter(
    body: dict[str, Any],
) -> None:
    values, problems = validate_definition(body, check_import=True)
    assert all(p.field in FIELDS for p in problems), problems
    if not problems:
        assert validate(body, SCHEMAS["TaskCreate"]) == [], body
        json.dumps(values, allow_nan=False)  # storable as JSON


@given(body=_bodies)
@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_every_rejection_names_a_field(
    served: RuntimeThread, body: dict[str, Any]
) -> None:
    body = {**body, "name": f"p{abs(hash(json.dumps(body, default=str))) % 10**9}"}
    response = _post(served, body)
    assert response.status_code in (201, 403, 422), (response.status_code, response.text)
    if response.status_code == 422:
        fields = [e["loc"][1] for e in response.json()["detail"] if len(e["loc"]) >= 2]
        assert fields, response.text
        assert all(f in FIELDS for f in fields), response.text
    if response.status_code == 201:
        assert validate_definition(body)[1] == []
        httpx.delete(f"{served.url}/tasks/{response.json()['id']}", timeout=30)
