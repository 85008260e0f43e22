"""Property-based run of the published OpenAPI schema against the served API: no response is a 5xx.

The API runs in this process (a Runtime serving HTTP on a loopback port, embedded backends); schemathesis
generates requests for every operation from ``/openapi.json``, a few examples each to stay bounded. The
event stream never ends by design, so it is left out (``test_runtime.py`` reads it for real).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
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
