"""The allow-listed module. It imports dangerous things, as real application modules do."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
from os import system
from pathlib import Path
from subprocess import run as run_command
from typing import Any

from . import other
from .other import ArqSettings, Base, touch_other

__all__ = [
    "ArqSettings",
    "Base",
    "asyncio",
    "other",
    "run_command",
    "subprocess",
    "system",
    "touch_other",
]


def touch(path: str) -> str:
    """The one honest function: writes ``path``."""
    Path(path).write_text("touch ran")
    return "touched"


async def atouch(path: str) -> str:
    Path(path).write_text("atouch ran")
    return "atouched"


class Jobs:
    @staticmethod
    def static(path: str) -> str:
        return touch(path)

    @classmethod
    def klass(cls, path: str) -> str:
        return touch(path)

    class Inner:
        @staticmethod
        def deep(path: str) -> str:
            return touch(path)


class Child(Base):
    """``Child.inherited`` is defined in ``other`` (on ``Base``), not here."""


alias_touch = touch
partial_system = functools.partial(os.system)
wrapped_system = functools.wraps(os.system)(lambda command: os.system(command))
lambda_touch = lambda path: touch(path)  # noqa: E731
instance = Jobs()
NOT_CALLABLE = 5


def __getattr__(name: str) -> Any:
    """A module ``__getattr__`` that would hand out ``os.system`` for any missing name."""
    if name.startswith("__"):
        raise AttributeError(name)
    return os.system
