"""``asyncsched events publish`` and ``asyncsched events listen``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from asyncsched.cli import main
from asyncsched.config import Settings, set_settings
from asyncsched.events import EventBus


@pytest.fixture(autouse=True)
def _reset_settings() -> Iterator[None]:
    yield
    set_settings(None)


async def test_publish_prints_the_event_and_delivers_it(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with EventBus(settings=Settings(redis_url=redis_url), agent_name="support-bot") as listener:
        argv = ["--redis-url", redis_url, "events", "publish", "email.processed", "--source", "email-agent"]
        argv += ["--target", "support-bot", "--payload", '{"n": 2}']
        assert await asyncio.to_thread(main, argv) == 0
        received = await listener.listen(timeout=15)
    printed = json.loads(capsys.readouterr().out)
    assert received is not None
    assert printed == received.to_dict()
    assert printed["payload"] == {"n": 2}
    assert printed["target_agent"] == "support-bot"


@pytest.mark.parametrize(
    ("payload", "message"),
    [("{nope", "not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
def test_publish_rejects_a_bad_payload(
    payload: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--redis-url", "memory://cli", "events", "publish", "x.y", "--source", "a", "--payload", payload]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_publish_rejects_a_bad_event_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--redis-url", "memory://cli", "events", "publish", "bad type", "--source", "a"]) == 2
    assert "event_type" in capsys.readouterr().err


@pytest.mark.slow
async def test_listen_prints_one_json_line_per_matching_event(real_redis_url: str) -> None:
    argv = [sys.executable, "-m", "asyncsched", "--redis-url", real_redis_url]
    argv += ["events", "listen", "--agent", "support-bot", "--type", "task.*", "--count", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        ready = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 30)
        assert "listening" in ready, ready
        async with EventBus(settings=Settings(redis_url=real_redis_url)) as bus:
            first = await bus.publish("task.completed", "email-agent", {"job": 1}, target_agent="support-bot")
            await bus.publish("email.sent", "email-agent")  # other type: not printed
            await bus.publish("task.failed", "report-agent", target_agent="someone-else")  # not this agent
            second = await bus.publish("task.failed", "report-agent")
        out, _ = await asyncio.wait_for(asyncio.to_thread(proc.communicate), 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert [json.loads(line) for line in out.splitlines()] == [first.to_dict(), second.to_dict()]
