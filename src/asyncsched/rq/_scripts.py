"""The Lua scripts of the wire format, one atomic operation per ``scripts/*.lua`` file (package data).

A ``--#include <lib>`` line of a script is replaced by ``scripts/lib_<lib>.lua``;
``lib_keys.lua``, which spells every key a script derives from data, is included first in every script.
The registry that loads and calls them is :class:`asyncsched._redis.scripts.ScriptRegistry`.
"""

from __future__ import annotations

from importlib import resources

import redis.asyncio as aioredis

from .._redis.scripts import ScriptRegistry

__all__ = ["SCRIPT_NAMES", "Scripts", "keyed", "source"]

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


def _text(name: str) -> str:
    return resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text()


def _read(name: str) -> str:
    """``scripts/<name>.lua`` with ``lib_keys.lua`` first and each ``--#include <lib>`` line replaced by
    ``scripts/lib_<lib>.lua``."""
    lines = _text(name).splitlines(keepends=True)
    for k, line in enumerate(lines):
        if line.startswith("--#include "):
            lines[k] = _text(f"lib_{line.split()[1]}")
    return _text("lib_keys") + "".join(lines)


# Read once, when the module is imported: never from a coroutine (file I/O would block the event loop).
_SOURCES = {name: _read(name) for name in SCRIPT_NAMES}


def keyed(text: str) -> str:
    """Another package's script with ``lib_keys.lua`` first, for the keys it derives from data it reads
    (the scheduler's claim reads the id of a task's previous run, and looks at that job's hash)."""
    return _SOURCES_LIB + text


_SOURCES_LIB = _text("lib_keys")


def with_life(text: str) -> str:
    """Another package's script with ``lib_life.lua`` first: it writes lifecycle records (``life_pack``)."""
    return _text("lib_life") + text


def source(name: str) -> str:
    """The text of ``scripts/<name>.lua`` as sent to Redis (its libraries included)."""
    return _SOURCES[name]


class Scripts(ScriptRegistry):
    """Every script of the wire format, registered on one client (EVALSHA; loaded again when forgotten)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        super().__init__(redis, _SOURCES)
