"""Task files are loaded safely: bombs, oversized, non-UTF-8, NUL, duplicate keys, deep nesting.

Each is one line naming file, line and (where there is one) field, never a traceback, from
``asyncsched tasks validate``, ``asyncsched run --tasks`` and ``TaskScheduler.load_tasks_from_yaml``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsched.config import Settings
from asyncsched.exceptions import TaskDefinitionError
from asyncsched.scheduler import TaskScheduler
from asyncsched.scheduler._fields import FIELDS
from asyncsched.scheduler._yaml import MAX_FILE_BYTES, validate_file

from ..servers import free_port
from .test_task_schema import _bodies

S = "tests.hostile.funcapp.services"
TASK = f'  - name: t\n    type: interval\n    schedule: 1 hour\n    function: "{S}:touch"\n'

# The bomb: anchors and aliases under kwargs, nine levels of nine (387 million strings), ~600 bytes.
BOMB = (
    "tasks:\n" + TASK + "    kwargs:\n"
    '      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"      {n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
)

# name -> (file bytes, expected line, expected field)
HOSTILE: dict[str, tuple[bytes, int, str | None]] = {
    "bomb": (BOMB.encode(), 12, "kwargs"),
    "recursive-alias": (b"tasks:\n  - &t {name: t, kwargs: {a: *t}}\n", 2, "kwargs"),
    "non-utf8": (("tasks:\n" + TASK).encode() + b"    description: caf\xe9\n", 6, "description"),
    "nul": (("tasks:\n" + TASK + "    description: a\x00b\n").encode(), 6, "description"),
    "control-char": (("tasks:\n" + TASK + "    description: a\x07b\n").encode(), 6, "description"),
    "duplicate-tasks": (
        ("tasks:\n" + TASK + "tasks:\n" + TASK.replace("name: t", "name: u")).encode(),
        6,
        "tasks",
    ),
    "duplicate-task-key": (("tasks:\n" + TASK + "    name: again\n").encode(), 6, "name"),
    "duplicate-kwarg": (("tasks:\n" + TASK + "    kwargs: {a: 1, a: 2}\n").encode(), 6, "kwargs"),
    "deep": (
        ("tasks:\n" + TASK + "    kwargs: {a: " + "[" * 5000 + "]" * 5000 + "}\n").encode(),
        6,
        "kwargs",
    ),
    "deep-complex-keys": (("tasks:\n  - {" + "? [" * 3000 + "]" * 3000 + ": 1}\n").encode(), 2, "tasks"),
    "python-tag": (
        ("tasks:\n" + TASK + "    kwargs: {a: !!python/object/apply:os.system [id]}\n").encode(),
        6,
        "kwargs",
    ),
    "binary-tag": (("tasks:\n" + TASK + "    kwargs: {a: !!binary aGVsbG8=}\n").encode(), 6, "kwargs"),
    "set-tag": (("tasks:\n" + TASK + "    args: [!!set {a, b}]\n").encode(), 6, "args"),
    "yaml-date-in-kwargs": (("tasks:\n" + TASK + "    kwargs: {day: 2024-01-01}\n").encode(), 6, "kwargs"),
    "year-1-date": (
        (
            f'tasks:\n  - {{name: t, type: date, function: "{S}:touch",\n'
            "     schedule: 0001-01-01T00:00:00+14:00}\n"
        ).encode(),
        3,
        "schedule",
    ),
    "huge-interval": (("tasks:\n" + TASK.replace("1 hour", "1000000000000 weeks")).encode(), 4, "schedule"),
    "nan-jitter": (("tasks:\n" + TASK + "    jitter: .nan\n").encode(), 6, "jitter"),
    "inf-timeout": (("tasks:\n" + TASK + "    timeout: .inf\n").encode(), 6, "timeout"),
    "surrogate-escape": (("tasks:\n" + TASK + '    kwargs: {a: "\\ud800"}\n').encode(), 6, "kwargs"),
}


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "tasks.yaml"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(HOSTILE))
def test_one_problem_with_file_line_and_field(tmp_path: Path, case: str) -> None:
    data, line, field = HOSTILE[case]
    path = _write(tmp_path, data)
    started = time.monotonic()
    tasks, problems = validate_file(path, "a")
    assert time.monotonic() - started < 10
    assert tasks == []
    assert [(p.file, p.line, p.field) for p in problems] == [(str(path), line, field)], problems
    assert "\n" not in str(problems[0])


def test_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = _write(tmp_path, ("tasks:\n" + TASK + "#" * MAX_FILE_BYTES + "\n").encode())
    tasks, problems = validate_file(path, "a")
    assert tasks == []
    assert len(problems) == 1
    assert f"larger than {MAX_FILE_BYTES} bytes" in str(problems[0])
    assert problems[0].file == str(path)


def test_aliases_within_bounds_still_work(tmp_path: Path) -> None:
    """Refusing bombs does not refuse YAML's ordinary reuse (merge keys, a shared value)."""
    text = (
        "tasks:\n"
        f'  - &first {{name: a, type: interval, schedule: 1 hour, function: "{S}:touch",\n'
        "      kwargs: &kw {x: 1}}\n"
        "  - {<<: *first, name: b, kwargs: *kw}\n"
    )
    tasks, problems = validate_file(_write(tmp_path, text.encode()), "a")
    assert problems == []
    assert [(t.name, t.kwargs) for t in tasks] == [("a", {"x": 1}), ("b", {"x": 1})]


def test_a_duplicate_tasks_key_no_longer_drops_the_first_list(tmp_path: Path) -> None:
    tasks, problems = validate_file(_write(tmp_path, HOSTILE["duplicate-tasks"][0]), "a")
    assert tasks == []
    assert [p.message for p in problems] == ["key 'tasks' appears twice (first on line 1)"]


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncsched", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("case", ["bomb", "duplicate-tasks", "non-utf8", "nul", "year-1-date"])
def test_tasks_validate_prints_one_line(tmp_path: Path, case: str) -> None:
    data, line, field = HOSTILE[case]
    path = _write(tmp_path, data)
    proc = _cli("tasks", "validate", str(path))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr  # the problem, then the summary
    assert lines[0].startswith(f"{path}:{line}, ")
    assert f"field '{field}'" in lines[0]


@pytest.mark.parametrize("case", ["bomb", "duplicate-tasks"])
def test_run_with_a_hostile_task_file_exits_with_one_line(tmp_path: Path, case: str) -> None:
    data, line, _ = HOSTILE[case]
    path = _write(tmp_path, data)
    proc = _cli(
        "--redis-url",
        "memory://hostile-run",
        "--database-url",
        f"sqlite+aiosqlite:///{tmp_path}/run.db",
        "run",
        "--tasks",
        str(path),
        "--port",
        str(free_port()),
        timeout=180,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if str(path) in x]
    assert len(errors) == 1, proc.stderr
    assert f"{path}:{line}, " in errors[0]


async def test_load_tasks_from_yaml_raises_one_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, HOSTILE["bomb"][0])
    scheduler = TaskScheduler(settings=Settings(redis_url="memory://hostile-load"))
    with pytest.raises(TaskDefinitionError) as info:
        await scheduler.load_tasks_from_yaml(path, "a")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].field == "kwargs"
    await scheduler.aclose()


# -- properties ----------------------------------------------------------------------------------------


def _flow(task: dict[str, object]) -> str:
    """A task as one line of YAML flow style (JSON, with YAML's spelling of non-finite numbers)."""
    text = json.dumps(task)
    return text.replace("-Infinity", "-.inf").replace("Infinity", ".inf").replace("NaN", ".nan")


def _check_problems(path: Path, structured: bool) -> None:
    tasks, problems = validate_file(path, "a")
    assert not (tasks and problems)
    for problem in problems:
        assert problem.file == str(path)
        assert "\n" not in str(problem)
        assert problem.line is not None, problem
        assert problem.line >= 1, problem
        if structured:
            assert problem.field in FIELDS, problem


@given(tasks=st.lists(_bodies, min_size=1, max_size=3))
@settings(max_examples=150, deadline=None, database=None)
def test_generated_task_files_never_raise_and_name_the_field(
    tmp_path_factory: pytest.TempPathFactory, tasks: list[dict[str, object]]
) -> None:
    path = tmp_path_factory.mktemp("gen") / "tasks.yaml"
    path.write_text("tasks:\n" + "".join(f"  - {_flow(t)}\n" for t in tasks), encoding="utf-8")
    _check_problems(path, structured=True)


_VALID = ("tasks:\n" + TASK + "    kwargs: {a: [1, 2], b: {c: x}}\n    jitter: 5\n").encode()


@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_VALID)), st.binary(min_size=0, max_size=6), st.integers(0, 3)),
        min_size=1,
        max_size=5,
    )
)
@settings(max_examples=200, deadline=None, database=None)
def test_mangled_task_files_never_raise(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[int, bytes, int]]
) -> None:
    data = bytearray(_VALID)
    for at, insert, cut in edits:
        at = min(at, len(data))
        data[at : at + cut] = insert
    path = tmp_path_factory.mktemp("mangled") / "tasks.yaml"
    path.write_bytes(bytes(data))
    _check_problems(path, structured=False)


@given(fanout=st.integers(1, 12), depth=st.integers(1, 12))
@settings(max_examples=40, deadline=None, database=None)
def test_alias_trees_are_bounded(tmp_path_factory: pytest.TempPathFactory, fanout: int, depth: int) -> None:
    lines = ["tasks:", TASK.rstrip("\n"), "    kwargs:", '      l0: &l0 ["x"]']
    lines += [f"      l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * fanout)}]" for n in range(1, depth + 1)]
    path = tmp_path_factory.mktemp("alias") / "tasks.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    started = time.monotonic()
    tasks, problems = validate_file(path, "a")
    assert time.monotonic() - started < 10
    assert bool(tasks) != bool(problems)
    if problems:
        assert problems[0].field == "kwargs", problems
