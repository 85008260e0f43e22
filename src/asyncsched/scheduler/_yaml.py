"""``tasks.yaml`` loading: the spec's format, checked strictly, every problem with file, line, task and field.

A file with any problem yields no task at all (:class:`TaskDefinitionError` carries the whole list), so an
agent is never half loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..exceptions import Problem, TaskDefinitionError
from ..store.models import ScheduledTask
from ._definition import FIELDS, _with, validate_definition

__all__ = ["load_tasks", "validate_file"]


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def validate_file(
    path: str | os.PathLike[str], agent_name: str, *, check_import: bool = True
) -> tuple[list[ScheduledTask], list[Problem]]:
    """Parse and check ``path``: the tasks (unsaved) and every problem found (empty when valid)."""
    file = str(path)
    problems: list[Problem] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [], [Problem(f"cannot read file: {exc.strerror or exc}", file=file)]
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            return [], [Problem(f"not valid YAML: {exc.problem or exc}", file=file, line=line)]
        except yaml.YAMLError as exc:
            return [], [Problem(f"not valid YAML: {exc}", file=file)]
        if root is None:
            return [], [Problem("the file is empty; expected a 'tasks:' list", file=file, line=1)]
        if not isinstance(root, yaml.MappingNode):
            return [], [
                Problem("the top level must be a mapping with a 'tasks:' list", file=file, line=_line(root))
            ]
        tasks_node: yaml.Node | None = None
        for key_node, value_node in root.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key == "tasks":
                tasks_node = value_node
            else:
                problems.append(
                    Problem(
                        f"unknown top-level key {key!r}; only 'tasks' is allowed",
                        file=file,
                        line=_line(key_node),
                    )
                )
        if tasks_node is None:
            problems.append(Problem("missing the 'tasks:' list", file=file, line=_line(root)))
            return [], problems
        if isinstance(tasks_node, yaml.ScalarNode) and tasks_node.tag.endswith(":null"):
            return [], problems
        if not isinstance(tasks_node, yaml.SequenceNode):
            problems.append(Problem("'tasks' must be a list of tasks", file=file, line=_line(tasks_node)))
            return [], problems
        tasks: list[ScheduledTask] = []
        seen: dict[str, int] = {}
        for index, task_node in enumerate(tasks_node.value, start=1):
            label = f"#{index}"
            if not isinstance(task_node, yaml.MappingNode):
                problems.append(
                    Problem(
                        "each task must be a mapping of keys", file=file, line=_line(task_node), task=label
                    )
                )
                continue
            data: dict[str, Any] = {}
            lines: dict[str, int] = {}
            local: list[Problem] = []
            for key_node, value_node in task_node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
                if key in data:
                    local.append(Problem(f"key {key!r} appears twice", line=_line(key_node), field=key))
                try:
                    data[key] = loader.construct_object(value_node, deep=True)
                except yaml.YAMLError as exc:
                    local.append(Problem(f"cannot read value: {exc}", line=_line(value_node), field=key))
                    data[key] = None
                lines[key] = _line(value_node) if key in FIELDS else _line(key_node)
            name = data.get("name")
            if isinstance(name, str) and name:
                label = name
                if name in seen:
                    local.append(
                        Problem(
                            f"duplicate task name (first defined on line {seen[name]})",
                            line=lines.get("name"),
                            field="name",
                        )
                    )
                else:
                    seen[name] = lines.get("name", _line(task_node))
            values, found = validate_definition(data, check_import=check_import)
            local.extend(found)
            for problem in local:
                line = problem.line or lines.get(problem.field or "", _line(task_node))
                problems.append(_with(problem, file=file, line=line, task=label))
            if not local:
                tasks.append(ScheduledTask(agent_name=agent_name, source=os.path.abspath(file), **values))
        problems.sort(key=lambda p: p.line or 0)
        return ([] if problems else tasks), problems
    finally:
        loader.dispose()


def load_tasks(
    path: str | os.PathLike[str], agent_name: str, *, check_import: bool = True
) -> list[ScheduledTask]:
    """The tasks of ``path`` (unsaved), or :class:`TaskDefinitionError` listing every problem of the file."""
    tasks, problems = validate_file(path, agent_name, check_import=check_import)
    if problems:
        raise TaskDefinitionError(problems)
    return tasks
