"""The one Lua script registry: load, cache by SHA1, call, and reload once when the server forgot a script.

Every script call of the package's hot paths goes through a :class:`ScriptRegistry`: one typed call
(:meth:`~ScriptRegistry.call`, a :class:`ScriptCall` record such as those of ``asyncsched.rq._calls``), one
call by name on the client's pool (:meth:`~ScriptRegistry.run`) or on a connection of the caller's own
(:meth:`~ScriptRegistry.run_on`), many calls in one pipelined round trip (:meth:`~ScriptRegistry.run_many`,
:meth:`~ScriptRegistry.call_many`), or a call the caller pipelines itself behind other commands
(:meth:`~ScriptRegistry.command`, then :meth:`~ScriptRegistry.settle` its reply, as the worker's claim does
behind its BLMOVE). A server that restarted or ran ``SCRIPT FLUSH`` answers ``NOSCRIPT``;
:meth:`~ScriptRegistry.reload` is the one path that loads the script again, and each call is then sent once
more (a script that never ran has no effect to repeat).

Keys are passed as ``KEYS`` (``numkeys`` first, as Redis Cluster needs them declared); arguments as ARGV.

Replies are typed :data:`Reply`: what a script returns over RESP2 with ``decode_responses`` off. A typed
call reads it with its own ``parse`` (the call's result type: :meth:`ScriptRegistry.call` is typed end to
end); the others narrow it with :func:`as_int`, :func:`as_bytes`, :func:`as_text` or :func:`as_list`, which
raise :class:`~asyncsched.exceptions.RedisRefused` on a shape the script never returns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ClassVar, NoReturn, Protocol, TypeAlias, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from ..exceptions import RedisRefused
from .connection import Line

__all__ = ["Reply", "ScriptCall", "ScriptRegistry", "as_bytes", "as_int", "as_list", "as_text"]

Reply: TypeAlias = "int | bytes | list[Reply] | None"
"""A Lua script's reply as redis-py hands it over RESP2 with ``decode_responses`` off: an integer (a Lua
number, truncated; ``true`` is 1), ``bytes`` (a string, or a status reply such as ``{ok='OK'}``), an array of
replies (a Lua table), or ``None`` (``false``, ``nil``). An error reply at the top is raised, never returned;
one nested in an array would arrive there as an exception object, and no script of the package returns one."""

Call = tuple[Sequence[Any], Sequence[Any]]  # (keys, args) of one script call
T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class ScriptCall(Protocol[T_co]):
    """One call of a script, as a typed record (``asyncsched.rq._calls``): its keys and arguments are
    derived from named fields, never counted by hand at the call site, and its reply is read by
    :meth:`parse` (a ``staticmethod`` such as :func:`as_int`: no extra layer on the hot paths)."""

    SCRIPT: ClassVar[str]

    def to_keys(self) -> list[Any]:
        """The call's ``KEYS``, in the order the script reads them."""
        ...

    def to_args(self) -> list[Any]:
        """The call's ``ARGV``, in the order the script reads them."""
        ...

    def parse(self, reply: Reply, /) -> T_co:
        """The script's reply as the call's result; raises ``RedisRefused`` on a shape the script never
        returns."""
        ...


def _unexpected(reply: Reply, expected: str) -> NoReturn:
    raise RedisRefused(f"unexpected reply from a Redis script: {reply!r:.200} (expected {expected})")


def as_int(reply: Reply) -> int:
    """``reply`` as the integer the script returned (raises ``RedisRefused`` if it is not one)."""
    if isinstance(reply, int):
        return reply
    _unexpected(reply, "an integer")


def as_bytes(reply: Reply) -> bytes:
    """``reply`` as the string the script returned, undecoded (raises ``RedisRefused`` if it is not one)."""
    if isinstance(reply, bytes):
        return reply
    _unexpected(reply, "a string")


def as_text(reply: Reply) -> str:
    """``reply`` as the UTF-8 text the script returned (raises ``RedisRefused`` if it is not a string)."""
    if isinstance(reply, bytes):
        return reply.decode()
    _unexpected(reply, "a string")


def as_list(reply: Reply) -> list[Reply]:
    """``reply`` as the array (Lua table) the script returned (raises ``RedisRefused`` if it is not one)."""
    if isinstance(reply, list):
        return reply
    _unexpected(reply, "an array")


def _same(reply: Reply) -> Reply:
    return reply


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

    async def settle(
        self, name: str, reply: Reply | Exception, args: Sequence[Any], keys: Sequence[Any] = ()
    ) -> Reply:
        """The reply of a call sent by :meth:`command`: on ``NOSCRIPT`` the script is reloaded and the call
        run again; another error reply is raised."""
        if isinstance(reply, NoScriptError):
            await self.reload(name)
            again: Reply = await self._r.evalsha(self._shas[name], len(keys), *keys, *args)
            return again
        if isinstance(reply, Exception):
            raise reply
        return reply

    def run(self, name: str, args: Sequence[Any], keys: Sequence[Any] = ()) -> Coroutine[Any, Any, Reply]:
        """Run script ``name`` with ``keys`` as KEYS and ``args`` as ARGV, on the client's pool; await the
        reply."""
        return self._run(name, args, keys, _same)

    def run_on(
        self, line: Line, name: str, args: Sequence[Any], keys: Sequence[Any] = ()
    ) -> Coroutine[Any, Any, Reply]:
        """:meth:`run` over ``line`` (a connection of the caller's own; see :class:`Line`)."""
        return self._run_on(line, name, args, keys, _same)

    def call(self, call: ScriptCall[T], line: Line | None = None) -> Coroutine[Any, Any, T]:
        """Run one typed call (on ``line`` when given, else on the client's pool); await its result (the
        reply read by ``call.parse``). (A plain method returning the coroutine that runs the script: one
        coroutine less per call on the enqueue, claim and finish hot paths.)"""
        if line is not None:
            return self._run_on(line, call.SCRIPT, call.to_args(), call.to_keys(), call.parse)
        return self._run(call.SCRIPT, call.to_args(), call.to_keys(), call.parse)

    async def call_many(self, calls: Sequence[ScriptCall[T]]) -> list[T]:
        """Typed calls of one script in one round trip (see :meth:`run_many`); their results in order."""
        if not calls:
            return []
        replies = await self.run_many(calls[0].SCRIPT, [(c.to_keys(), c.to_args()) for c in calls])
        return [c.parse(reply) for c, reply in zip(calls, replies, strict=True)]

    async def _run(
        self, name: str, args: Sequence[Any], keys: Sequence[Any], parse: Callable[[Reply], T]
    ) -> T:
        try:
            reply = await self._r.evalsha(self._shas[name], len(keys), *keys, *args)
        except NoScriptError:
            await self.reload(name)
            reply = await self._r.evalsha(self._shas[name], len(keys), *keys, *args)
        return parse(reply)

    async def _run_on(
        self, line: Line, name: str, args: Sequence[Any], keys: Sequence[Any], parse: Callable[[Reply], T]
    ) -> T:
        (reply,) = await line.execute(self.command(name, args, keys))
        if isinstance(reply, Exception):  # NOSCRIPT (or an error reply): settle() is then awaited
            return parse(await self.settle(name, reply, args, keys))
        return parse(reply)

    async def run_many(self, name: str, calls: Sequence[Call]) -> list[Reply]:
        """Run script ``name`` once per ``(keys, args)``, in order, in one round trip (a pipeline, not a
        transaction: Redis serves other clients between the calls). The first error reply is raised."""
        replies = await self._pipelined(name, calls)
        if any(isinstance(r, NoScriptError) for r in replies):
            await self.reload(name)
            redo = [k for k, r in enumerate(replies) if isinstance(r, NoScriptError)]
            for k, reply in zip(redo, await self._pipelined(name, [calls[k] for k in redo]), strict=True):
                replies[k] = reply
        out: list[Reply] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            out.append(reply)
        return out

    async def _pipelined(self, name: str, calls: Sequence[Call]) -> list[Reply | Exception]:
        pipe: Any = self._redis.pipeline(transaction=False)
        async with pipe:
            for keys, args in calls:
                pipe.execute_command(*self.command(name, args, keys))
            replies: list[Reply | Exception] = await pipe.execute(raise_on_error=False)
        return replies
