"""Suite-wide guards (a pytest plugin loaded by ``tests/conftest.py``): no test hangs, leaks show where made.

* **Teardown is bounded.** pytest-timeout (``timeout_method = "signal"``) fails a test that runs past its
  timeout, but it disarms its timer as soon as a test fails (``pytest_exception_interact``), so a failed
  test whose teardown then hangs (an event loop waiting on a task that ignores cancellation) hung the run.
  Here every teardown gets whatever is left of the test's timeout (at least ``TEARDOWN_FLOOR`` seconds) and
  fails with the stack of where it was stuck once that runs out.
* **Backstop.** Whatever still blocks (a C call that signals cannot interrupt, such as uvloop closing a
  loop with handles still open, or a wedged thread) is ended by ``faulthandler``: all threads' stacks are
  dumped and the process exits ``HARD_MARGIN`` seconds after the test's timeout (re-armed after a failure,
  which makes pytest's faulthandler plugin cancel pending dumps). A run never hangs.
* **Leaks are reported at the test that leaked.** With ``filterwarnings = error`` an unclosed socket kept
  alive by a reference cycle (or by a failed test's traceback in ``sys.last_traceback``) used to fail
  whichever later test happened to trigger garbage collection. After each test (after its event loop is
  closed) the garbage is collected here and any ``ResourceWarning`` fails *this* test's teardown, naming
  the resource. What exists once collection is done (modules, test items) is frozen out of the collector
  (``gc.freeze``), so each of these collections only scans what tests created: about a millisecond, not
  the ~130 ms of a full collection of the imported world.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Generator, Iterator
from types import FrameType
from typing import Any

import pytest
from _pytest.faulthandler import fault_handler_stderr_fd_key

TEARDOWN_FLOOR = 15.0
HARD_MARGIN = 90.0
_DEADLINE = pytest.StashKey[float]()
_NAMER = pytest.StashKey[threading.Timer]()


def timeout_of(item: pytest.Item) -> float:
    """The test's pytest-timeout budget: its ``timeout`` marker, else the ini ``timeout``."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.kwargs.get("timeout", marker.args[0] if marker.args else None)
        if value is not None:
            return float(value)
    ini = item.config.getini("timeout")
    return float(ini) if ini else 0.0


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()  # long-lived by now; the per-test collections below scan only newer objects


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, None]:
    budget = timeout_of(item)
    item.stash[_DEADLINE] = time.monotonic() + budget if budget > 0 else float("inf")
    _arm_backstop(item)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        namer = item.stash.get(_NAMER, None)
        if namer is not None:
            namer.cancel()


def _arm_backstop(item: pytest.Item, floor: float = 0.0) -> None:
    """Exit the process ``HARD_MARGIN`` s after the test's deadline (or ``floor`` s from now, if later),
    with every thread's stack on the real stderr (pytest's faulthandler keeps a copy of it)."""
    deadline = item.stash.get(_DEADLINE, float("inf"))
    if deadline == float("inf"):
        return
    left = max(deadline - time.monotonic(), floor)
    out = item.config.stash.get(fault_handler_stderr_fd_key, sys.__stderr__.fileno())
    faulthandler.dump_traceback_later(left + HARD_MARGIN, exit=True, file=out)
    # name the test first (faulthandler's dump cannot), if a Python thread still gets to run
    note = f"\n[tests/guards.py] {item.nodeid} ran {HARD_MARGIN:.0f}s past its timeout: ending the run\n"
    previous = item.stash.get(_NAMER, None)
    if previous is not None:
        previous.cancel()
    namer = threading.Timer(max(left + HARD_MARGIN - 1, 0), os.write, (out, note.encode()))
    namer.daemon = True
    namer.start()
    item.stash[_NAMER] = namer


@pytest.hookimpl(trylast=True)
def pytest_exception_interact(node: pytest.Item | pytest.Collector) -> None:
    # pytest's faulthandler plugin cancels every pending dump when a test fails: arm ours again
    if isinstance(node, pytest.Item):
        _arm_backstop(node, TEARDOWN_FLOOR)


class TeardownTimeout(Exception):
    """Raised into a teardown that ran past the test's timeout."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, None]:
    deadline = item.stash.get(_DEADLINE, float("inf"))
    if deadline == float("inf") or not hasattr(signal, "setitimer"):
        yield
        return
    limit = max(deadline - time.monotonic(), TEARDOWN_FLOOR)
    _arm_backstop(item, TEARDOWN_FLOOR)  # whatever cancelled it meanwhile (a failure does)

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TeardownTimeout(
            f"teardown of {item.nodeid} ran past the test's timeout (given {limit:.0f}s): "
            "a task ignoring cancellation, an event never set?"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    started = time.monotonic()
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_delay:  # pytest-timeout's own timer (a passing test keeps it through teardown)
            left = old_delay - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


def collect_leaks() -> list[str]:
    """Collect the garbage now and return the ``ResourceWarning`` messages it raised."""
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):  # a failed test's traceback keeps its frames (and their sockets) alive
            setattr(sys, name, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.fixture(autouse=True)
def leaks_are_reported_here() -> Iterator[None]:
    """Fail the test that leaked a resource, not the next one to collect garbage.

    Autouse and defined first, so it is set up before (and torn down after) every other fixture of the
    test, the event loop included."""
    yield
    leaked = collect_leaks()
    if leaked:
        pytest.fail("resources leaked by this test:\n  " + "\n  ".join(leaked), pytrace=False)
