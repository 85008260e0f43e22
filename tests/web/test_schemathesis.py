"""Property-based run of the published OpenAPI schema against the served API: no response is a 5xx.

The API runs in this process (a Runtime serving HTTP on a loopback port, embedded backends); schemathesis
generates requests for every operation from ``/openapi.json``, a few examples each to stay bounded. The
event stream never ends by design, so it is left out (``test_runtime.py`` reads it for real).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from asyncsched._redis import reset_memory_servers
from asyncsched.config import Settings

from .conftest import RuntimeThread, write_tasks


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeThread]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    reset_memory_servers()
    config = Settings(
        redis_url="memory://schemathesis",
        database_url=f"sqlite+aiosqlite:///{tmp}/api.db",
        allowed_functions=("tests.web.webtasks",),
    )
    with RuntimeThread(config, [write_tasks(tmp / "tasks.yaml")]) as server:
        yield server
    reset_memory_servers()


def test_no_server_errors(served: RuntimeThread) -> None:
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json").exclude(path="/events/stream")
    tried: list[str] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tried.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case: Any) -> None:
            response = case.call(base_url=served.url, timeout=30)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                )
            case.validate_response(response, checks=[not_a_server_error])

        check()
    assert len(tried) >= 18, tried
    assert failures == []


def test_stateful_sequences_never_500(served: RuntimeThread) -> None:
    """Stateful mode: schemathesis follows the document's links (create a task, then get, enable, disable,
    run, delete it; enqueue a job, then get it) with generated data at every step. Each scenario starts
    from no API-created tasks, so a sequence answers the same when hypothesis replays it; the execution
    links are left out because their answers depend on how far the worker and recorder have got."""
    schema = (
        schemathesis.openapi.from_url(f"{served.url}/openapi.json")
        .exclude(path="/events/stream")
        .exclude(operation_id=["get_execution", "cancel_execution"])
    )
    failures: list[str] = []

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            with httpx.Client(base_url=served.url, timeout=30) as client:
                for task in client.get("/tasks", params={"limit": 500}).json()["items"]:
                    if task.get("source") == "api":
                        client.delete(f"/tasks/{task['id']}")
                for queue in client.get("/queues", params={"limit": 500}).json()["items"]:
                    if queue.get("paused"):  # operator endpoints change state a replay must not see
                        client.post(f"/queues/{queue['name']}/resume")

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": served.url, "timeout": 30}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
                )
            case.validate_response(response, checks=[not_a_server_error])

    Machine.run(
        settings=settings(
            max_examples=30,
            stateful_step_count=5,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.generate],
        )
    )
    assert failures == []
