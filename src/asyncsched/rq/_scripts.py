"""The Lua scripts of the wire format, one atomic operation per ``scripts/*.lua`` file (package data)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from .._redis.connection import Line

__all__ = ["SCRIPT_NAMES", "Scripts", "source"]

SCRIPT_NAMES = (
    "enqueue",
    "claim",
    "finish",
    "cancel",
    "heartbeat",
    "promote",
    "release_locks",
    "requeue",
    "reap",
    "empty",
    "delete_failed",
    "limits",
    "progress",
)


def _read(name: str) -> str:
    """``scripts/<name>.lua``, with each ``--#include <lib>`` line replaced by ``scripts/lib_<lib>.lua``."""
    text = resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text()
    lines = text.splitlines(keepends=True)
    for k, line in enumerate(lines):
        if line.startswith("--#include "):
            lib = line.split()[1]
            lines[k] = resources.files(__package__).joinpath("scripts", f"lib_{lib}.lua").read_text()
    return "".join(lines)


# Read once, when the module is imported: never from a coroutine (file I/O would block the event loop).
_SOURCES = {name: _read(name) for name in SCRIPT_NAMES}


def source(name: str) -> str:
    """The text of ``scripts/<name>.lua``."""
    return _SOURCES[name]


class Scripts:
    """Every script registered on one client (EVALSHA, loaded on first use)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._scripts = {name: redis.register_script(source(name)) for name in SCRIPT_NAMES}

    def sha(self, name: str) -> str:
        """The SHA1 of script ``name`` (for sending ``EVALSHA`` inside a pipeline of other commands)."""
        return str(self._scripts[name].sha)

    async def run(self, name: str, args: list[Any]) -> Any:
        """Run script ``name`` with ``args`` as ARGV (no KEYS: keys are built from the prefix)."""
        return await self._scripts[name](keys=[], args=args)

    async def run_on(self, line: Line, name: str, args: list[Any]) -> Any:
        """:meth:`run` over ``line`` (a connection of the caller's own; see :class:`Line`)."""
        script = self._scripts[name]
        reply = (await line.execute(("EVALSHA", script.sha, 0, *args)))[0]
        if isinstance(reply, NoScriptError):  # Redis restarted or flushed its script cache
            await self._redis.script_load(script.script)
            reply = (await line.execute(("EVALSHA", script.sha, 0, *args)))[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def run_many(self, name: str, arg_lists: list[list[Any]]) -> list[Any]:
        """Run script ``name`` once per argument list, in order, in one round trip (a pipeline, not a
        transaction: Redis serves other clients between the calls)."""
        script = self._scripts[name]
        pipe: Any = self._redis.pipeline(transaction=False)
        async with pipe:
            for args in arg_lists:
                await script(keys=[], args=args, client=pipe)
            replies: list[Any] = await pipe.execute()
        return replies
