"""tasks.yaml: the spec's format, strict and kind validation (file, line, task, field; all at once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asyncsched import TaskDefinitionError
from asyncsched.scheduler import load_tasks, validate_file

SPEC_EXAMPLE = """\
tasks:
  - name: process_pending_emails
    description: Process pending emails every 5 minutes
    enabled: true
    type: interval
    schedule: "5 minutes"
    function: "tests.scheduler.conftest:jobs_fn"
    kwargs:
      batch_size: 10

  - name: daily_report
    description: Generate daily report at 9 AM
    enabled: true
    type: cron
    schedule: "0 9 * * *"
    function: "tests.scheduler.conftest:jobs_fn"
"""


def write(tmp_path: Path, text: str, name: str = "tasks.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_spec_example_loads(tmp_path: Path) -> None:
    tasks = load_tasks(write(tmp_path, SPEC_EXAMPLE), "email-agent")
    assert [(t.name, t.type, t.schedule) for t in tasks] == [
        ("process_pending_emails", "interval", "5 minutes"),
        ("daily_report", "cron", "0 9 * * *"),
    ]
    first = tasks[0]
    assert first.agent_name == "email-agent"
    assert first.kwargs == {"batch_size": 10}
    assert first.args == []
    assert first.enabled is True
    assert first.queue == "default"
    assert first.timezone == "UTC"
    assert first.source == str(tmp_path / "tasks.yaml")


def test_optional_keys(tmp_path: Path) -> None:
    text = """\
tasks:
  - name: berlin
    type: cron
    schedule: "0 9 * * mon-fri"
    timezone: Europe/Berlin
    function: "tests.scheduler.conftest:jobs_fn"
    args: [1, "two"]
    queue: reports
    timeout: 5 minutes
    retry: {max: 3, interval: [10, 30, 60]}
    jitter: 30 seconds
    misfire: skip
    misfire_grace: 2 minutes
  - name: once
    type: date
    schedule: 2026-12-01T09:00:00
    function: "tests.scheduler.conftest:jobs_fn"
    enabled: false
    retry: 2
"""
    berlin, once = load_tasks(write(tmp_path, text), "a")
    assert berlin.timezone == "Europe/Berlin"
    assert berlin.args == [1, "two"]
    assert berlin.queue == "reports"
    assert berlin.options == {
        "timeout": 300,
        "retry": {"max": 3, "interval": [10, 30, 60]},
        "jitter": 30.0,
        "misfire": "skip",
        "misfire_grace": 120.0,
    }
    assert once.type == "date"
    assert once.enabled is False
    assert once.options == {"retry": {"max": 2, "interval": 0}}


BAD = """\
tasks:
  - name: ok
    type: interval
    schedule: "5 minutes"
    function: "tests.scheduler.conftest:jobs_fn"
  - name: broken
    type: cron
    schedule: "61 * * * *"
    function: "json:no_such_function"
    colour: red
  - name: ok
    type: interval
    schedule: "0 minutes"
    function: "no_such_module_xyz:f"
    enabled: "yes"
  - name: shapes
    type: weekly
    schedule: "5 minutes"
    function: "not a path"
    args: {a: 1}
    kwargs: [1]
    timezone: Mars/Olympus
    misfire: sometimes
"""


def test_every_problem_is_reported_at_once_with_file_line_task_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    with pytest.raises(TaskDefinitionError) as info:
        load_tasks(path, "a")
    found = {(p.line, p.task, p.field) for p in info.value.problems}
    assert found == {
        (8, "broken", "schedule"),
        (9, "broken", "function"),
        (10, "broken", "colour"),
        (11, "ok", "name"),
        (13, "ok", "schedule"),
        (14, "ok", "function"),
        (15, "ok", "enabled"),
        (17, "shapes", "type"),
        (19, "shapes", "function"),
        (20, "shapes", "args"),
        (21, "shapes", "kwargs"),
        (22, "shapes", "timezone"),
        (23, "shapes", "misfire"),
    }
    assert all(p.file == str(path) for p in info.value.problems)
    text = str(info.value)
    assert f"{path}:9, task 'broken', field 'function': module 'json' has no attribute" in text
    assert "cannot import module 'no_such_module_xyz'" in text
    assert "duplicate task name (first defined on line 2)" in text
    assert "unknown key 'colour'" in text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "the file is empty"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("jobs: []\n", "unknown top-level key 'jobs'"),
        ("tasks: 5\n", "'tasks' must be a list"),
        ("tasks:\n  - name: [unclosed\n", "not valid YAML"),
        ("tasks:\n  - just a string\n", "each task must be a mapping"),
        ("tasks:\n  - name: x\n", "missing"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, fragment: str) -> None:
    tasks, problems = validate_file(write(tmp_path, text), "a")
    assert tasks == []
    assert any(fragment in p.message for p in problems), problems


def test_missing_file() -> None:
    _tasks, problems = validate_file("/nonexistent/tasks.yaml", "a")
    assert "cannot read file" in problems[0].message


def test_empty_task_list_is_valid(tmp_path: Path) -> None:
    assert load_tasks(write(tmp_path, "tasks: []\n"), "a") == []


def test_cli_validate(tmp_path: Path) -> None:
    good = write(tmp_path, SPEC_EXAMPLE, "good.yaml")
    bad = write(tmp_path, BAD, "bad.yaml")
    cmd = [sys.executable, "-m", "asyncsched", "tasks", "validate"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "ok, 2 task(s)" in ok.stdout
    failed = subprocess.run([*cmd, str(good), str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert f"{bad}:9, task 'broken', field 'function'" in failed.stderr
    assert "13 problem(s)" in failed.stderr
