"""Not on the allow-list and imported by nothing: importing it at all is a failure of the rule."""

from __future__ import annotations

IMPORTED = True


def f(path: str) -> None:  # pragma: no cover - must never run
    raise AssertionError("tests.hostile.funcapp.never was imported and called")
