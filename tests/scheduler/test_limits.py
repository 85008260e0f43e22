"""A scheduled task's flow limit (``limit:`` in tasks.yaml, code and the API) reaches every run's job."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncsched import TaskDefinitionError
from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.scheduler import TaskScheduler, load_tasks

from .conftest import FUNCTION, Clock

YAML = """\
tasks:
  - name: calls
    type: interval
    schedule: "1 minute"
    function: "tests.scheduler.conftest:jobs_fn"
    kwargs: {tenant_id: 7}
    limit:
      rate: "openai:60/m"
      max_concurrency: 2
      concurrency_key: "tenant:{tenant_id}"
  - name: bad_rate
    type: interval
    schedule: "1 minute"
    function: "tests.scheduler.conftest:jobs_fn"
    limit: {rate: "lots"}
  - name: bad_shape
    type: interval
    schedule: "1 minute"
    function: "tests.scheduler.conftest:jobs_fn"
    limit: {rate: "1/s", burst: 3}
"""


def test_yaml_limit_is_validated_with_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(YAML)
    with pytest.raises(TaskDefinitionError) as info:
        load_tasks(path, "a")
    found = {(p.task, p.field, p.line) for p in info.value.problems}
    assert found == {("bad_rate", "limit", 15), ("bad_shape", "limit", 20)}
    assert "rate must look like '60/m'" in str(info.value)
    path.write_text(YAML.split("  - name: bad_rate")[0])
    (task,) = load_tasks(path, "a")
    limit = {"rate": "openai:60/m", "max_concurrency": 2, "concurrency_key": "tenant:{tenant_id}"}
    assert task.options["limit"] == limit


async def test_runs_carry_the_limit(sched_settings: Settings, clock: Clock) -> None:
    async with (
        TaskQueue(settings=sched_settings) as queue,
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as scheduler,
    ):
        task = await scheduler.register_task(
            name="calls",
            type="interval",
            schedule="1 minute",
            function=FUNCTION,
            kwargs={"tenant_id": 7},
            limit={"rate": "openai:60/m", "max_concurrency": 2, "concurrency_key": "tenant:{tenant_id}"},
        )
        job_id = await scheduler.run_now(task.id)
        raw = await queue.redis.hget(queue.keys.job(job_id), "asyncsched_limits")
        assert raw == b"openai\t\t60\t60.0\ntenant:7\t2\t\t"
