"""A task's retry policy with backoff and exception types, from tasks.yaml and code, reaches its jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asyncsched import TaskDefinitionError
from asyncsched.config import Settings
from asyncsched.queue import TaskQueue
from asyncsched.scheduler import TaskScheduler, load_tasks

from .conftest import FUNCTION, Clock

YAML = f"""\
tasks:
  - name: flaky
    type: interval
    schedule: 1 minute
    function: "{FUNCTION}"
    retry: {{max: 5, backoff: exponential, base: 1, cap: 300, jitter: true, on: [TimeoutError, OSError]}}
"""


def test_yaml_backoff_policy(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(YAML)
    (task,) = load_tasks(path, "a")
    assert task.options == {
        "retry": {
            "max": 5,
            "backoff": "exponential",
            "base": 1.0,
            "cap": 300.0,
            "jitter": True,
            "on": ["builtins.TimeoutError", "builtins.OSError"],
        }
    }


@pytest.mark.parametrize(
    ("retry", "message"),
    [
        ("{max: 3, backoff: linear}", "backoff"),
        ("{max: 3, backoff: exponential, cap: -1}", "cap must be seconds"),
        ("{max: 3, on: [os.path]}", "os.path"),
        ("{max: 3, on: [no_such_module_x.Boom]}", "no_such_module_x"),
        ("{max: 3, backoff: exponential, jitter: maybe}", "jitter must be true or false"),
    ],
)
def test_yaml_bad_policy_names_the_field(tmp_path: Path, retry: str, message: str) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(YAML.replace(YAML.splitlines()[-1], f"    retry: {retry}"))
    with pytest.raises(TaskDefinitionError, match=message) as info:
        load_tasks(path, "a")
    assert "retry" in str(info.value)


async def test_fired_job_carries_the_policy(sched_settings: Settings, clock: Clock) -> None:
    async with (
        TaskQueue(settings=sched_settings) as queue,
        TaskScheduler(settings=sched_settings, queue=queue, clock=clock) as scheduler,
    ):
        await scheduler.register_task(
            name="t",
            type="interval",
            schedule="1 minute",
            function=FUNCTION,
            retry={"max": 3, "backoff": "exponential", "base": 2, "cap": 5, "on": ["ValueError"]},
        )
        clock.advance(minutes=1)
        (firing,) = await scheduler.run_pending()
        raw = await queue.redis.hgetall(queue.keys.job(firing.job_id))
        assert json.loads(raw[b"retry_intervals"]) == [2, 4, 5]
        assert json.loads(raw[b"asyncsched_retry"])["on"] == ["builtins.ValueError"]
