"""The one lifecycle idiom (STYLE.md §4): every long-lived component is an async context manager.

:class:`Stacked`: ``async with`` calls ``_start(stack)``, which enters each part on one exit stack; a start
that fails closes what it had opened before the error propagates; leaving closes everything in reverse
order. :class:`Closing`: a component opened on first use, whose ``async with`` only closes it
(``aclose()``) on the way out. :class:`SyncClosing`: the same for the blocking facades (``with`` closes
them with ``close()``); :class:`Facade`: a blocking facade over one async engine, opened on the portal's
loop at first use, whose methods :func:`blocking` makes from the async methods they run.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Concatenate, Generic, ParamSpec, Protocol, Self, TypeVar

from ._portal import portal

__all__ = ["Closing", "Facade", "Stacked", "SyncClosing", "blocking"]


class Stacked:
    """Base of a component whose parts are entered on one ``AsyncExitStack`` by :meth:`_start`."""

    _stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def _start(self, stack: AsyncExitStack) -> None:
        """Enter the parts on ``stack`` (each closed with it, in reverse order)."""
        raise NotImplementedError


class Closing:
    """Base of a component that opens what it needs on first use: ``async with`` returns it as it is, and
    leaving calls :meth:`aclose`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close what this component opened."""
        raise NotImplementedError


class SyncClosing:
    """Base of a blocking facade: ``with`` returns it as it is, and leaving calls :meth:`close`."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close what this facade opened."""
        raise NotImplementedError


class _Engine(Protocol):
    async def aclose(self) -> None: ...


E = TypeVar("E", bound=_Engine)


class Facade(SyncClosing, Generic[E]):
    """Base of a blocking facade over one async engine ``E``: made by :meth:`_open` on the portal's loop
    at first use (:meth:`_opened`), closed by :meth:`close` (and made again by a later use)."""

    _engine: E | None = None

    async def _open(self) -> E:
        """A new engine (on the portal's loop)."""
        raise NotImplementedError

    async def _opened(self) -> E:
        if self._engine is None:
            self._engine = await self._open()
        return self._engine

    def close(self) -> None:
        """Close the engine's connections (they open again on the next call)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            portal().call(engine.aclose)


F = TypeVar("F")
X = TypeVar("X")
T = TypeVar("T")
P = ParamSpec("P")


def blocking(
    target: Callable[[F], Awaitable[X]], method: Callable[Concatenate[X, P], Awaitable[T]], doc: str
) -> Callable[Concatenate[F, P], T]:
    """A method of a blocking facade ``F`` made from the async ``method`` it runs: on the portal's loop it
    awaits ``target(facade)`` (the async object) and calls ``method`` on it. It takes ``method``'s
    parameters and returns its result (for mypy and ``inspect.signature`` alike); ``doc`` documents it."""

    def call(self: F, /, *args: P.args, **kwargs: P.kwargs) -> T:
        async def run() -> T:
            return await method(await target(self), *args, **kwargs)

        return portal().call(run)

    functools.update_wrapper(call, method, assigned=(), updated=())  # inspect.signature: the method's
    call.__doc__ = doc
    return call
