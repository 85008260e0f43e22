"""Fenced code blocks of the Markdown docs: which run, and how.

A ``python``/``py`` block runs as a script in a fresh process (top-level ``await`` and ``async with`` allowed,
as in the docs); a ``bash``/``sh``/``shell`` block runs under ``bash -euo pipefail``. The comment line just
above a block may say how:

* ``<!-- not-run: REASON -->`` — deliberately not run (REASON is required and shown in the test report);
* ``<!-- run-for: SECONDS -->`` — a block that runs until stopped (a worker, ``scheduler.run()``): it must
  still be running, without an error, after SECONDS (then it is stopped), or have exited with 0 before.

Other languages (``yaml``, ``text``, ``console`` transcripts with output, ...) are not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUNNABLE = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
_FENCE = re.compile(r"^(\s*)(`{3,})(\w+)?\s*$")
_MARK = re.compile(r"^\s*<!--\s*(not-run|run-for):\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    language: str
    code: str
    not_run: str | None = None
    run_for: float | None = None

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


def extract(path: Path) -> list[Snippet]:
    """The runnable-language blocks of one Markdown file, with their marks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, language = match.group(1), match.group(2), (match.group(3) or "").lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        body = [line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : end]]
        if language in RUNNABLE:
            previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            mark = _MARK.match(previous)
            not_run = mark.group(2) if mark and mark.group(1) == "not-run" else None
            run_for = float(mark.group(2)) if mark and mark.group(1) == "run-for" else None
            out.append(Snippet(path, i + 1, RUNNABLE[language], "\n".join(body) + "\n", not_run, run_for))
        i = end + 1
    return out
