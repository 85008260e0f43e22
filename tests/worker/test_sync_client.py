"""The synchronous Redis client RQ callbacks get: one per worker, however many threads ask at once."""

from __future__ import annotations

import contextlib
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from asyncsched.worker import _execute


class _Client:
    closed = 0

    def close(self) -> None:
        type(self).closed += 1


def _executor(threads: int) -> _execute.Executor:
    shared: Any = types.SimpleNamespace(cfg=types.SimpleNamespace(threads=threads), running=None, redis=None)
    shared.keys = None
    return _execute.Executor(shared, "redis://localhost:1/0", None)


def test_threads_asking_at_once_share_one_client_and_the_worker_closes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[_Client] = []
    all_in = threading.Barrier(8, timeout=5)

    def slow_factory(url: str) -> Any:
        made.append(client := _Client())
        return client

    def racing_factory(url: str) -> Any:
        # every thread has passed the "no client yet" test before any makes one: the race callbacks on
        # concurrent jobs run into (each client made and dropped leaked its socket)
        with contextlib.suppress(threading.BrokenBarrierError):  # alone (the fixed code): on after 0.5 s
            all_in.wait(timeout=0.5)
        return slow_factory(url)

    monkeypatch.setattr(_execute, "create_sync_redis", racing_factory)
    closed_before = _Client.closed
    executor = _executor(threads=8)
    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(lambda _: executor.sync_redis(), range(8)))
    assert len(made) == 1
    assert all(c is made[0] for c in clients)
    executor.close()
    assert _Client.closed == closed_before + 1


def test_a_thread_asking_after_the_worker_closed_gets_an_error_not_a_leaked_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[_Client] = []
    monkeypatch.setattr(_execute, "create_sync_redis", lambda url: made.append(_Client()) or made[-1])
    shared: Any = types.SimpleNamespace(
        cfg=types.SimpleNamespace(threads=2), running=None, redis=None, keys=None
    )
    executor = _execute.Executor(shared, "redis://localhost:1/0", None)
    executor.close()  # a job thread abandoned at the worker's exit asks only now
    with pytest.raises(RuntimeError, match="stopped"):
        executor.sync_redis()
    assert made == []
