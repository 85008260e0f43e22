"""Task functions of the hostile-input tests (importable by workers: ``tests.hostile.hostilejobs``)."""

from __future__ import annotations

import os


def mark(path: str) -> str:
    """Append one line to ``path``: executions are counted outside the system."""
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return "marked"
