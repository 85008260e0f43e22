"""The async API called from sync code: fail loudly instead of returning a coroutine nobody runs.

``from asyncsched import TaskQueue`` is the async class; the spec's sync calls (``TaskQueue().enqueue(...)``
without ``await``) need :mod:`asyncsched.sync`. Methods marked :func:`async_api` check, only when no event
loop runs in the calling thread (sync code; the async hot path pays one C call):

* the result is discarded (``queue.enqueue(...)`` as a statement): nothing could ever run it, so
  :class:`TypeError` is raised at once, naming the sync facade;
* otherwise (``job_id = queue.enqueue(...)``, or ``asyncio.run(queue.enqueue(...))``, which is fine) the
  coroutine is returned wrapped: it runs normally when awaited or passed to ``asyncio.run``; iterating it or
  reading an attribute raises with the same message, and if it is dropped without being awaited an ERROR
  names the call and the fix (instead of Python's terse "coroutine ... was never awaited").
"""

from __future__ import annotations

import asyncio
import collections.abc
import dis
import functools
import logging
import sys
from collections.abc import Callable, Coroutine, Generator
from types import FrameType
from typing import Any, ParamSpec, TypeVar

__all__ = ["async_api"]

log = logging.getLogger("asyncsched")

P = ParamSpec("P")
T = TypeVar("T")

_MESSAGE = (
    "{name}() is async and was called outside an event loop: it returns a coroutine and nothing happens "
    "until it is awaited. In sync code use asyncsched.sync.{facade} (the same calls without await); in "
    "async code, await it."
)


def async_api(
    facade: str,
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Mark a coroutine method of the async API whose sync twin is ``asyncsched.sync.<facade>``."""

    def decorate(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
            coro = fn(*args, **kwargs)
            if asyncio._get_running_loop() is not None:
                return coro
            # the class the user called it on (the method may be defined on a mixin of it)
            name = f"{type(args[0]).__name__}.{fn.__name__}" if args else fn.__qualname__
            message = _MESSAGE.format(name=name, facade=facade)
            if _result_discarded(sys._getframe(1)):
                coro.close()
                raise TypeError(message)
            return NotAwaited(coro, message)

        return guarded

    return decorate


def _result_discarded(frame: FrameType) -> bool:
    """Whether the caller drops the value of the call it is executing (the next instruction is POP_TOP)."""
    try:  # f_lasti is the CALL or one of its inline cache entries (which get_instructions skips)
        following = next((i for i in dis.get_instructions(frame.f_code) if i.offset > frame.f_lasti), None)
    except Exception:  # pragma: no cover - bytecode we cannot read: do not guess
        return False
    return following is not None and following.opname == "POP_TOP"


class NotAwaited(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine made outside an event loop: runs when awaited, says what is wrong when misused."""

    __slots__ = ("_coro", "_message", "_started")

    def __init__(self, coro: Coroutine[Any, Any, Any], message: str) -> None:
        self._coro = coro
        self._message = message
        self._started = False

    def send(self, value: Any) -> Any:
        self._started = True
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        self._started = True
        return self._coro.throw(*args)

    def close(self) -> None:
        self._started = True
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        self._started = True
        return self._coro.__await__()

    def __iter__(self) -> Any:
        raise TypeError(self._message)

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("cr_", "__")):
            return getattr(self._coro, name)
        raise AttributeError(self._message)

    def __repr__(self) -> str:
        return f"<not awaited: {self._coro!r}>"

    def __del__(self) -> None:
        if not self._started:
            self._coro.close()  # instead of Python's "never awaited" RuntimeWarning, the message below
            log.error("%s", self._message)
