"""The one lifecycle idiom of a composition (STYLE.md §4): what ``_start`` opens, on one exit stack.

``async with`` calls ``_start(stack)``, which enters each part on ``stack``; a start that fails closes what
it had opened before the error propagates; leaving closes everything in reverse order.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Self

__all__ = ["Stacked"]


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
