"""Not on the allow-list; ``services`` imports it."""

from __future__ import annotations

from pathlib import Path


def touch_other(path: str) -> str:
    Path(path).write_text("other ran")
    return "other"


class Base:
    @staticmethod
    def inherited(path: str) -> str:
        Path(path).write_text("inherited ran")
        return "inherited"


class ArqSettings:
    """An arq ``WorkerSettings`` defined here (``services`` imports it under another module's name)."""

    functions = (touch_other,)
