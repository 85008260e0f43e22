"""The one Lua script registry: load, cache by SHA1, call, and reload once when the server forgot a script.

Every script call of the package's hot paths goes through a :class:`ScriptRegistry`: one call on the client's
pool (:meth:`~ScriptRegistry.run`), on a connection of the caller's own (:meth:`~ScriptRegistry.run_on`), many
calls in one pipelined round trip (:meth:`~ScriptRegistry.run_many`), or a call the caller pipelines itself
behind other commands (:meth:`~ScriptRegistry.command`, then :meth:`~ScriptRegistry.settle` its reply, as the
worker's claim does behind its BLMOVE). A server that restarted or ran ``SCRIPT FLUSH`` answers ``NOSCRIPT``;
:meth:`~ScriptRegistry.reload` is the one path that loads the script again, and each call is then sent once
more (a script that never ran has no effect to repeat).

Keys are passed as ``KEYS`` (``numkeys`` first, as Redis Cluster needs them declared); arguments as ARGV.
"""

from __future__ import annotations

import hashlib
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from .connection import Line

__all__ = ["ScriptCall", "ScriptRegistry"]

Call = tuple[Sequence[Any], Sequence[Any]]  # (keys, args) of one script call


class ScriptCall(Protocol):
    """One call of a script, as a typed record (``asyncsched.rq._calls``): its keys and arguments are
    derived from named fields, never counted by hand at the call site."""

    SCRIPT: ClassVar[str]

    def to_keys(self) -> list[Any]:
        """The call's ``KEYS``, in the order the script reads them."""
        ...

    def to_args(self) -> list[Any]:
        """The call's ``ARGV``, in the order the script reads them."""
        ...


class ScriptRegistry:
    """Scripts by name (``sources``: name -> Lua text) on one client; SHA1s are computed once, here."""

    def __init__(self, redis: aioredis.Redis, sources: Mapping[str, str]) -> None:
        self._redis = redis
        self._r: Any = redis  # redis-py's stubs type replies loosely
        self._sources = dict(sources)
        self._shas = {name: hashlib.sha1(text.encode()).hexdigest() for name, text in sources.items()}

    def sha(self, name: str) -> str:
        """The SHA1 of script ``name`` (what ``EVALSHA`` names it by)."""
        return self._shas[name]

    def command(self, name: str, args: Sequence[Any], keys: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The ``EVALSHA`` command of one call, for a pipeline of the caller's own (see :meth:`settle`)."""
        return ("EVALSHA", self._shas[name], len(keys), *keys, *args)

    async def reload(self, name: str) -> None:
        """Load script ``name`` again (the server answered ``NOSCRIPT``: restarted or flushed)."""
        await self._r.script_load(self._sources[name])

    async def settle(self, name: str, reply: Any, args: Sequence[Any], keys: Sequence[Any] = ()) -> Any:
        """The reply of a call sent by :meth:`command`: on ``NOSCRIPT`` the script is reloaded and the call
        run again; another error reply is raised."""
        if isinstance(reply, NoScriptError):
            await self.reload(name)
            return await self._r.evalsha(self._shas[name], len(keys), *keys, *args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def run(self, name: str, args: Sequence[Any], keys: Sequence[Any] = ()) -> Any:
        """Run script ``name`` with ``keys`` as KEYS and ``args`` as ARGV, on the client's pool."""
        try:
            return await self._r.evalsha(self._shas[name], len(keys), *keys, *args)
        except NoScriptError:
            await self.reload(name)
            return await self._r.evalsha(self._shas[name], len(keys), *keys, *args)

    def call(self, call: ScriptCall, line: Line | None = None) -> Coroutine[Any, Any, Any]:
        """Run one typed call (on ``line`` when given, else on the client's pool); await the result.
        (A plain method returning :meth:`run_on`'s or :meth:`run`'s coroutine: one coroutine less per call
        on the enqueue and claim hot paths.)"""
        if line is not None:
            return self.run_on(line, call.SCRIPT, call.to_args(), call.to_keys())
        return self.run(call.SCRIPT, call.to_args(), call.to_keys())

    async def call_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Typed calls of one script in one round trip (see :meth:`run_many`)."""
        if not calls:
            return []
        return await self.run_many(calls[0].SCRIPT, [(c.to_keys(), c.to_args()) for c in calls])

    async def run_on(self, line: Line, name: str, args: Sequence[Any], keys: Sequence[Any] = ()) -> Any:
        """:meth:`run` over ``line`` (a connection of the caller's own; see :class:`Line`)."""
        (reply,) = await line.execute(self.command(name, args, keys))
        if isinstance(reply, Exception):  # NOSCRIPT (or an error reply): settle() is then awaited
            return await self.settle(name, reply, args, keys)
        return reply

    async def run_many(self, name: str, calls: Sequence[Call]) -> list[Any]:
        """Run script ``name`` once per ``(keys, args)``, in order, in one round trip (a pipeline, not a
        transaction: Redis serves other clients between the calls). The first error reply is raised."""
        replies = await self._pipelined(name, calls)
        if any(isinstance(r, NoScriptError) for r in replies):
            await self.reload(name)
            redo = [k for k, r in enumerate(replies) if isinstance(r, NoScriptError)]
            for k, reply in zip(redo, await self._pipelined(name, [calls[k] for k in redo]), strict=True):
                replies[k] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _pipelined(self, name: str, calls: Sequence[Call]) -> list[Any]:
        pipe: Any = self._redis.pipeline(transaction=False)
        async with pipe:
            for keys, args in calls:
                pipe.execute_command(*self.command(name, args, keys))
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
