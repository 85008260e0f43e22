"""Intervals count from the task's registration (or ``start``), stored so every replica agrees; ``align:
epoch`` keeps the old multiples-of-the-interval-since-1970 ticks for those who want them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from asyncsched.config import Settings
from asyncsched.exceptions import TaskDefinitionError
from asyncsched.scheduler import TaskScheduler

from .conftest import FUNCTION, Clock, RecordingQueue


def t(hour: int, minute: int, second: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 12, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
def late_clock() -> Clock:
    return Clock(now=t(21, 2, 4))  # a Tuesday


async def test_five_minutes_registered_at_21_02_04_first_runs_at_21_07_04(
    sched_settings: Settings, queue: RecordingQueue, late_clock: Clock
) -> None:
    async with (
        TaskScheduler(settings=sched_settings, queue=queue, clock=late_clock) as api,
        TaskScheduler(settings=sched_settings, queue=queue, clock=late_clock) as replica,
    ):
        task = await api.register_task(
            name="emails", type="interval", schedule="5 minutes", function=FUNCTION
        )
        assert task.anchor_at == t(21, 2, 4)
        assert task.next_run_at == t(21, 7, 4)
        late_clock.now = t(21, 5)
        assert await replica.run_pending() == []  # not the epoch-aligned 21:05:00
        late_clock.now = t(21, 7, 4)
        (firing,) = await replica.run_pending()
        assert firing.tick == t(21, 7, 4)
        late_clock.now = t(21, 12, 4)
        (firing,) = await api.run_pending()  # the other replica computes the same ticks
        assert firing.tick == t(21, 12, 4)


async def test_registering_the_same_definition_again_keeps_the_anchor_a_change_resets_it(
    scheduler: TaskScheduler, clock: Clock
) -> None:
    first = await scheduler.register_task(name="r", type="interval", schedule="1 hour", function=FUNCTION)
    clock.advance(minutes=17)
    again = await scheduler.register_task(name="r", type="interval", schedule="1 hour", function=FUNCTION)
    assert again.anchor_at == first.anchor_at
    assert again.next_run_at == first.next_run_at
    changed = await scheduler.register_task(name="r", type="interval", schedule="2 hours", function=FUNCTION)
    assert changed.anchor_at == clock.now
    assert changed.next_run_at == clock.now + timedelta(hours=2)


async def test_align_epoch_and_start_are_available(scheduler: TaskScheduler, late_clock: Clock) -> None:
    scheduler.clock = late_clock
    epoch = await scheduler.register_task(
        name="e", type="interval", schedule="5 minutes", function=FUNCTION, align="epoch"
    )
    assert epoch.anchor_at is None
    assert epoch.next_run_at == t(21, 5)
    weekly = await scheduler.register_task(
        name="w", type="interval", schedule="1 week", function=FUNCTION, align="epoch"
    )
    assert weekly.next_run_at is not None
    assert weekly.next_run_at.weekday() == 3  # Thursday: the epoch was one
    from_registration = await scheduler.register_task(
        name="w2", type="interval", schedule="1 week", function=FUNCTION
    )
    assert from_registration.next_run_at == t(21, 2, 4, day=8)  # a week from now, a Tuesday
    started = await scheduler.register_task(
        name="s", type="interval", schedule="1 hour", function=FUNCTION, start="2026-12-01T00:30:00+00:00"
    )
    assert started.next_run_at == t(21, 30)


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        (
            {"type": "interval", "schedule": "5 minutes", "align": "sideways"},
            "must be 'registration' or 'epoch'",
        ),
        ({"type": "cron", "schedule": "0 9 * * *", "align": "epoch"}, "applies to interval tasks only"),
        (
            {"type": "interval", "schedule": "5 minutes", "align": "epoch", "start": "2026-01-01T00:00:00Z"},
            "keep one",
        ),
    ],
)
async def test_bad_align_names_the_field(
    scheduler: TaskScheduler, definition: dict[str, str], message: str
) -> None:
    with pytest.raises(TaskDefinitionError) as caught:
        await scheduler.register_task(name="bad", function=FUNCTION, **definition)
    assert caught.value.problems[0].field == "align"
    assert message in caught.value.problems[0].message


async def test_align_in_yaml(scheduler: TaskScheduler, tmp_path: Path, late_clock: Clock) -> None:
    scheduler.clock = late_clock
    path = tmp_path / "tasks.yaml"
    path.write_text(
        "tasks:\n"
        f"  - {{name: a, type: interval, schedule: '5 minutes', function: '{FUNCTION}', align: epoch}}\n"
        f"  - {{name: b, type: interval, schedule: '5 minutes', function: '{FUNCTION}'}}\n"
    )
    a, b = await scheduler.register_file(path, "yaml-agent")
    assert (a.next_run_at, b.next_run_at) == (t(21, 5), t(21, 7, 4))
    path.write_text(
        "tasks:\n"
        f"  - {{name: a, type: interval, schedule: '5 minutes', function: '{FUNCTION}', align: nope}}\n"
    )
    with pytest.raises(TaskDefinitionError, match=r"tasks.yaml.*align"):
        await scheduler.register_file(path, "yaml-agent")
