"""The task supervisor: restarts a background task that crashed or ended unasked, with capped backoff."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from asyncsched._supervise import Supervised


async def test_a_crashing_task_is_restarted_with_growing_capped_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[float] = []
    loop = asyncio.get_running_loop()
    enough = asyncio.Event()

    async def crash() -> None:
        runs.append(loop.time())
        if len(runs) == 5:
            enough.set()
            await asyncio.Event().wait()
        raise RuntimeError(f"crash {len(runs)}")

    with caplog.at_level(logging.ERROR, logger="asyncsched.supervise"):
        sup = Supervised("crasher", crash, initial=0.02, cap=0.08).start()
        await asyncio.wait_for(enough.wait(), 10)
        await sup.stop()
    pauses = [b - a for a, b in itertools.pairwise(runs)]
    assert pauses[0] >= 0.015
    assert pauses[1] >= 0.035  # doubled
    assert pauses[3] < 0.5  # capped (0.08 s)
    assert sup.restarts == 4
    assert isinstance(sup.last_error, RuntimeError)
    logged = [r for r in caplog.records if "crasher crashed" in r.getMessage()]
    assert len(logged) == 4
    assert logged[0].exc_info is not None  # the exception, with its traceback
    assert not sup.running


async def test_a_task_that_returns_unasked_is_restarted_and_done_ends_it() -> None:
    runs = 0
    finished = False

    async def short() -> None:
        nonlocal runs, finished
        runs += 1
        if runs == 3:
            finished = True

    sup = Supervised("short", short, done=lambda: finished, initial=0.01).start()
    assert sup.task is not None
    await asyncio.wait_for(sup.task, 10)
    assert runs == 3
    assert sup.restarts == 2


async def test_stop_cancels_until_done_and_ends_supervision() -> None:
    started = asyncio.Event()
    cancelled = 0

    async def stubborn() -> None:
        nonlocal cancelled
        started.set()
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled += 1
                if cancelled == 1:
                    continue  # swallows the first cancellation, as some client libraries do
                raise

    sup = Supervised("stubborn", stubborn).start()
    await started.wait()
    await asyncio.wait_for(sup.stop(), 10)
    assert cancelled == 2
    assert sup.restarts == 0
    assert not sup.running


async def test_a_stray_cancellation_from_inside_counts_as_a_crash() -> None:
    runs = 0
    again = asyncio.Event()

    async def cancels_itself() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncio.CancelledError  # not from stop(): a library leaking one of its own
        again.set()
        await asyncio.Event().wait()

    sup = Supervised("stray", cancels_itself, initial=0.01).start()
    await asyncio.wait_for(again.wait(), 10)
    assert sup.restarts == 1
    await sup.stop()


def test_backoff_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="backoff"):
        Supervised("x", asyncio.sleep, initial=0)
    with pytest.raises(ValueError, match="backoff"):
        Supervised("x", asyncio.sleep, initial=2, cap=1)
