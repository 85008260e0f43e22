"""``tasks.yaml`` loading: the spec's format, checked strictly, every problem with file, line, task and field.

A file with any problem yields no task at all (:class:`TaskDefinitionError` carries the whole list), so an
agent is never half loaded.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from ..exceptions import Problem, TaskDefinitionError
from ..store.models import ScheduledTask
from ._definition import FIELDS, _with, new_task, validate_definition

__all__ = ["load_tasks", "validate_file"]


MAX_FILE_BYTES = 1024 * 1024
"""Largest task file read."""
MAX_DEPTH = 64
"""Deepest nesting of YAML collections."""
MAX_VALUES = 100_000
"""Most values a file may hold, counting an aliased value again wherever ``*alias`` repeats it (so a
"billion laughs" file of nested aliases is refused before anything is expanded)."""


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Refused(yaml.MarkedYAMLError):
    """A file the loader will not build: too deep, too large once aliases expand, a duplicate key."""

    def __init__(self, message: str, mark: Any, field: str | None) -> None:
        super().__init__(problem=message, problem_mark=mark)
        self.field = field


class _TaskLoader(yaml.SafeLoader):
    """``SafeLoader`` that bounds nesting and alias expansion and refuses duplicate keys."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._path: list[str | int] = []
        self._depth = 0
        self._values = 0
        self._sizes: dict[int, int] = {}

    def _field(self) -> str | None:
        """The task field being read (``tasks`` / index / field), if any."""
        path = self._path
        if len(path) >= 3 and path[0] == "tasks" and isinstance(path[2], str):
            return path[2]
        return str(path[0]) if path else None

    def _count(self, n: int, mark: Any) -> None:
        self._values += n
        if self._values > MAX_VALUES:
            raise _Refused(
                f"more than {MAX_VALUES} values once anchors and aliases are expanded; write values out or "
                "split the file",
                mark,
                self._field(),
            )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        step: str | int | None = None
        if isinstance(index, yaml.ScalarNode):
            step = str(index.value)[:100]
        elif isinstance(index, int) and isinstance(parent, yaml.SequenceNode):
            step = index
        if step is not None:
            self._path.append(step)
        try:
            return self._compose(parent, index)
        finally:
            if step is not None:
                self._path.pop()

    def _compose(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise _Refused(
                        f"alias *{event.anchor} is inside its own anchor", event.start_mark, self._field()
                    )
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:  # counted per node, so complex keys (`? [...]`) count too
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", event.start_mark, self._field())
        before = self._values
        self._count(1, event.start_mark)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._values - before
        if isinstance(node, yaml.MappingNode):
            self._no_duplicate_keys(node)
        return node

    def _no_duplicate_keys(self, node: yaml.MappingNode) -> None:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise _Refused(
                    f"key {str(key_node.value)[:100]!r} appears twice (first on line {seen[key]})",
                    key_node.start_mark,
                    self._field() if len(self._path) > 2 else str(key_node.value)[:100],
                )
            seen[key] = _line(key_node)


def _read(file: str, path: str | os.PathLike[str]) -> tuple[str | None, list[Problem]]:
    """The file's text, or the one problem that stops it being read (size, encoding, NUL)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, [Problem(f"cannot read file: {exc.strerror or exc}", file=file)]
    if len(data) > MAX_FILE_BYTES:
        return None, [Problem(f"file is larger than {MAX_FILE_BYTES} bytes", file=file)]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        field = _key_of(data.split(b"\n")[line - 1].decode("utf-8", "replace"))
        message = f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded"
        return None, [Problem(message, file=file, line=line, field=field)]
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        field = _key_of(text.split("\n")[line - 1])
        return None, [Problem("contains a NUL character", file=file, line=line, field=field)]
    return text, []


_KEY = re.compile(r"\A[\s-]*([A-Za-z_][A-Za-z0-9_]*)\s*:")


def _key_of(line: str) -> str | None:
    """The mapping key a raw line starts with (to name the field of an unreadable line), if any."""
    match = _KEY.match(line)
    return match.group(1) if match else None


def _yaml_problem(exc: yaml.YAMLError, file: str, text: str) -> Problem:
    """One line for a YAML error: the first line of its message, its line and (when known) its field."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        field = _key_of(text.split("\n")[line - 1])
        message = f"not valid YAML: character {exc.character!r} is not allowed"
        return Problem(message, file=file, line=line, field=field)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = mark.line + 1 if mark is not None else None
        message = " ".join(str(exc.problem or exc.context or exc).split())
        field = exc.field if isinstance(exc, _Refused) else None
        prefix = "" if isinstance(exc, _Refused) else "not valid YAML: "
        return Problem(prefix + message, file=file, line=where, field=field)
    return Problem(f"not valid YAML: {' '.join(str(exc).split())}", file=file)


def validate_file(
    path: str | os.PathLike[str], agent_name: str, *, check_import: bool = True
) -> tuple[list[ScheduledTask], list[Problem]]:
    """Parse and check ``path``: the tasks (unsaved) and every problem found (empty when valid).

    Nothing about the file raises: unreadable, oversized, non-UTF-8 or hostile content is one problem.
    """
    file = str(path)
    text, problems = _read(file, path)
    if text is None:
        return [], problems
    try:
        loader = _TaskLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters before parsing
        return [], [_yaml_problem(exc, file, text)]
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            return [], [_yaml_problem(exc, file, text)]
        except RecursionError:
            return [], [Problem(f"nested deeper than {MAX_DEPTH} levels", file=file)]
        tasks_node = _tasks_node(root, file, problems)
        if tasks_node is None:
            return [], problems
        tasks: list[ScheduledTask] = []
        seen: dict[str, int] = {}
        for index, task_node in enumerate(tasks_node.value, start=1):
            task = _one_task(loader, task_node, f"#{index}", seen, file, problems, check_import=check_import)
            if task is not None:
                tasks.append(new_task({"agent_name": agent_name, "source": os.path.abspath(file), **task}))
        problems.sort(key=lambda p: p.line or 0)
        return ([] if problems else tasks), problems
    finally:
        loader.dispose()


def _tasks_node(root: yaml.Node | None, file: str, problems: list[Problem]) -> yaml.SequenceNode | None:
    """The ``tasks:`` list of the document (``None`` with the problems added when there is none)."""
    if root is None:
        problems.append(Problem("the file is empty; expected a 'tasks:' list", file=file, line=1))
        return None
    if not isinstance(root, yaml.MappingNode):
        problems.append(
            Problem("the top level must be a mapping with a 'tasks:' list", file=file, line=_line(root))
        )
        return None
    tasks_node: yaml.Node | None = None
    for key_node, value_node in root.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
        if key == "tasks":
            tasks_node = value_node
        else:
            message = f"unknown top-level key {str(key)[:100]!r}; only 'tasks' is allowed"
            problems.append(Problem(message, file=file, line=_line(key_node)))
    if tasks_node is None:
        problems.append(Problem("missing the 'tasks:' list", file=file, line=_line(root)))
        return None
    if isinstance(tasks_node, yaml.ScalarNode) and tasks_node.tag.endswith(":null"):
        return None
    if not isinstance(tasks_node, yaml.SequenceNode):
        problems.append(Problem("'tasks' must be a list of tasks", file=file, line=_line(tasks_node)))
        return None
    return tasks_node


def _one_task(
    loader: _TaskLoader,
    node: yaml.Node,
    label: str,
    seen: dict[str, int],
    file: str,
    problems: list[Problem],
    *,
    check_import: bool,
) -> dict[str, Any] | None:
    """One task's column values, or ``None`` with its problems (file, line, task, field) added."""
    if not isinstance(node, yaml.MappingNode):
        problems.append(
            Problem("each task must be a mapping of keys", file=file, line=_line(node), task=label)
        )
        return None
    data: dict[str, Any] = {}
    lines: dict[str, int] = {}
    local: list[Problem] = []
    try:
        loader.flatten_mapping(node)  # merge keys (<<: *defaults) into the task's own keys
    except yaml.YAMLError as exc:
        problems.append(_with(_yaml_problem(exc, file, ""), task=label))
        return None
    for key_node, value_node in node.value:
        key = str(key_node.value)[:100] if isinstance(key_node, yaml.ScalarNode) else "(not a text key)"
        try:
            data[key] = loader.construct_object(value_node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:  # e.g. a timestamp out of range
            text = " ".join(str(getattr(exc, "problem", None) or exc).split())
            local.append(Problem(f"cannot read value: {text}", line=_line(value_node), field=key))
            data[key] = None
        lines[key] = _line(value_node) if key in FIELDS else _line(key_node)
    name = data.get("name")
    if isinstance(name, str) and name:
        label = name[:100]
        if name in seen:
            message = f"duplicate task name (first defined on line {seen[name]})"
            local.append(Problem(message, line=lines.get("name"), field="name"))
        else:
            seen[name] = lines.get("name", _line(node))
    values, found = validate_definition(data, check_import=check_import)
    local.extend(found)
    for problem in local:
        line = problem.line or lines.get(problem.field or "", _line(node))
        problems.append(_with(problem, file=file, line=line, task=label))
    return None if local else values


def load_tasks(
    path: str | os.PathLike[str], agent_name: str, *, check_import: bool = True
) -> list[ScheduledTask]:
    """The tasks of ``path`` (unsaved), or :class:`TaskDefinitionError` listing every problem of the file."""
    tasks, problems = validate_file(path, agent_name, check_import=check_import)
    if problems:
        raise TaskDefinitionError(problems)
    return tasks
