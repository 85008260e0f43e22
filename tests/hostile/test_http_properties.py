"""Property-based hostile input against a real server: no 5xx, and every rejection names its field.

The API runs in this process (a Runtime serving HTTP on a loopback port, embedded Redis, SQLite); hypothesis
generates request bodies (valid ones mutated with arbitrary JSON values, text with lone surrogates, deep
nesting, raw bytes) and query strings (known and unknown names, arbitrary values). Storage is covered on
every backend by ``test_http.py``; these properties are about the HTTP boundary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncsched._boundary import loads_json
from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings
from asyncsched.exceptions import InvalidValue
from asyncsched.web._spec import OPERATIONS

from ..web.conftest import RuntimeThread, write_tasks

EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
)

TASK = {"name": "p1", "type": "interval", "schedule": "1 hour", "function": "tests.web.webtasks:add"}
JOB = {"function": "tests.web.webtasks:add", "kwargs": {"a": 1}}

any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
"""Any code point, lone surrogates included (hypothesis leaves them out unless told)."""

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("properties")
    reset_memory_servers()
    config = Settings(
        redis_url="memory://properties",
        database_url=f"sqlite+aiosqlite:///{tmp}/api.db",
        allowed_functions=("tests.web.webtasks",),
    )
    with RuntimeThread(config, [write_tasks(tmp / "tasks.yaml")]) as runtime:
        yield runtime.url
    reset_memory_servers()


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


def check_answer(response: httpx.Response, where: str) -> None:
    """The properties every answer keeps: no 5xx; errors are JSON; a 422 names each field it refuses."""
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text[:200]
        detail = response.json()["detail"]
        assert detail
    if response.status_code == 422:
        for problem in response.json()["detail"]:
            assert problem["loc"], problem
            assert problem["loc"][0] in (where, "path"), problem
            assert problem["msg"], problem


def send_json(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


@EXAMPLES
@given(field=st.sampled_from([*TASK, "args", "kwargs", "timezone", "description", "queue", "timeout", "retry",
                               "jitter", "misfire", "start", "agent_name", "enabled", "other"]),
       value=json_values)  # fmt: skip
def test_task_bodies(client: httpx.Client, field: str, value: Any) -> None:
    response = send_json(client, "/tasks", {**TASK, "name": "prop", field: value})
    check_answer(response, "body")
    if response.status_code == 201:
        client.delete(f"/tasks/{response.json()['id']}")


@EXAMPLES
@given(field=st.sampled_from([*JOB, "args", "queue", "agent_name", "task_name", "description", "timeout",
                               "retry", "delay", "at", "other"]),
       value=json_values)  # fmt: skip
def test_job_bodies(client: httpx.Client, field: str, value: Any) -> None:
    check_answer(send_json(client, "/jobs", {**JOB, field: value, "delay": 3600}), "body")


@EXAMPLES
@given(body=json_values)
def test_arbitrary_json_bodies(client: httpx.Client, body: Any) -> None:
    for path in ("/tasks", "/jobs"):
        check_answer(send_json(client, path, body), "body")


@EXAMPLES
@given(
    raw=st.binary(max_size=200)
    | st.builds(lambda n, b: b * n, st.integers(60, 20_000), st.sampled_from([b"[", b'{"a":']))
)
def test_raw_bytes_bodies(client: httpx.Client, raw: bytes) -> None:
    response = client.post("/jobs", content=raw, headers={"content-type": "application/json"})
    check_answer(response, "body")


GETS = sorted({op.path for op in OPERATIONS if op.method == "GET" and op.path != "/events/stream"})
KNOWN_PARAMS = sorted({p["name"] for op in OPERATIONS for p in op.params if p["in"] == "query"})


def pct(text: str) -> str:
    """Percent-encoded UTF-8 of ``text``, a lone surrogate as the (invalid) bytes it would be."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def as_received(name: str) -> str:
    return name.encode("utf-8", "surrogatepass").decode("utf-8", "replace")[:100]


@EXAMPLES
@given(path=st.sampled_from(GETS),
       params=st.lists(st.tuples(st.sampled_from([*KNOWN_PARAMS, "x", "agnet"]) | any_text, any_text),
                       max_size=4),
       path_value=any_text.filter(lambda t: t.strip(".") != ""))  # fmt: skip
def test_query_parameters(
    client: httpx.Client, path: str, params: list[tuple[str, str]], path_value: str
) -> None:
    concrete = re.sub(r"\{[^}]+\}", pct(path_value), path)
    query = "&".join(f"{pct(name)}={pct(value)}" for name, value in params)
    response = client.get(f"{concrete}?{query}" if query else concrete)
    check_answer(response, "query")
    if response.status_code == 422:
        given_names = {as_received(name) for name, _ in params}
        for problem in response.json()["detail"]:
            if problem["loc"][0] == "query":
                assert problem["loc"][1] in given_names, (problem, params)


@EXAMPLES
@given(raw=st.binary(min_size=1, max_size=40))
def test_raw_query_bytes(client: httpx.Client, raw: bytes) -> None:
    encoded = "".join(f"%{b:02X}" for b in raw)
    for query in (f"limit={encoded}", f"{encoded}=1", f"agent_name={encoded}"):
        check_answer(client.get(f"/tasks?{query}"), "query")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None, database=None)
@given(
    leaf=st.recursive(
        st.integers() | st.text(max_size=10), lambda inner: st.lists(inner, max_size=3), max_leaves=5
    ),
    wrappers=st.lists(st.sampled_from(["list", "object", "pair"]), min_size=50, max_size=80),
)
def test_nesting_bound_is_exact(leaf: Any, wrappers: list[str]) -> None:
    """The pre-parse depth check agrees with the parsed value's depth (strings full of brackets included)."""
    value = leaf
    for kind in wrappers:
        value = [value] if kind == "list" else {"[{": value} if kind == "object" else ["]}", value, {}]
    text = json.dumps(value)
    if _depth(value) > 64:
        with pytest.raises(InvalidValue, match="nested deeper than 64"):
            loads_json(text)
    else:
        assert loads_json(text) == value
