"""Size budgets of the source tree, checked in CI (docs/architecture.md, "Budgets").

* no Python module of ``src/`` over 400 lines, no function or method over 60 lines;
* no Lua function over 60 lines either (:func:`lua_functions`): each named function of a script under
  ``src/`` (``path:name``; ``path:outer.inner`` when nested) and the script's main chunk, its lines outside
  every function (``path:<main>``: from its first to its last statement, less the functions and their
  descriptions). Blocks are matched by their keywords outside strings and comments; a script whose blocks
  do not match is a broken budget (never a guess);
* repeated code: the pairs of places that share six or more lines, counted by the ``duplicates`` command
  where the machine has it (it is a developer tool: without it this part is skipped, with a note);
* ``mypy`` (strict, as configured in pyproject.toml), unless ``--skip-mypy`` (CI ran it just before);
* no ``Any`` at the seams: a public function or method (not ``_``-named, ``__init__`` included) whose
  parameters or result are typed plain ``Any`` fails when it **crosses a package boundary**, unless it is
  in :data:`ANY_ALLOWED` with the reason. The rule:

  - a *package* is a sub-package of ``asyncsched`` (``web``, ``queue``...) or a top-level module of it
    (``asyncsched._boundary`` is a package of its own);
  - a top-level function or class *crosses* when a module of another package imports it (``from m import
    name``, re-exports through ``__init__`` followed; or ``from pkg import m`` and then ``m.name``), or a
    package ``__init__`` exports it (the public API); a crossing class's methods cross, and so do those
    of the package's own classes it inherits from;
  - plain ``Any`` only: ``*args``/``**kwargs`` and containers (``dict[str, Any]`` of JSON) are not
    counted; JSON values are :data:`asyncsched._json.JSONValue`, duck-typed values ``object``.

  The public signatures typed ``Any`` that stay inside their package are counted per package and listed
  with ``--list-any`` (reported, not failed).

What is over budget today is listed in ``scripts/budgets-allow.txt`` with its current size. That list may
only shrink: a module or function (Python or Lua) over budget that is not on it, or that grew beyond its
listed size, fails the check. ``--tighten`` rewrites the list with the sizes of today (lowering entries,
dropping those now within budget; it never adds or raises one).

Usage: ``python scripts/budgets.py [--skip-mypy] [--tighten] [--list-any]``; exit status 1 when a budget
is broken.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
ALLOW = ROOT / "scripts" / "budgets-allow.txt"
MODULE_LINES = 400
FUNCTION_LINES = 60
DUPLICATE_PAIRS = 10
_PAIRS = re.compile(r"^(\d+) pairs? of places")

ANY_ALLOWED: dict[str, str] = {
    # A job's return value is whatever the user's function returned (any picklable object): ``object``
    # would make every caller cast what it knows the type of.
    "src/asyncsched/queue/_reading.py:QueueReader.result(return)": "a user function's return value",
    "src/asyncsched/queue/_sync.py:TaskQueue.result(return)": "a user function's return value",
    "src/asyncsched/rq/codec.py:ResultEntry.value(return)": "a user function's return value",
}
"""Public signatures that cross a package with a plain ``Any``, each for a value that is dynamic by nature."""


def module_sizes() -> dict[str, int]:
    """Lines of every Python module under ``src/``, by path relative to the repository."""
    return {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(SRC.rglob("*.py"))
    }


def function_sizes() -> dict[str, int]:
    """Lines of every function and method under ``src/`` (``path:Class.method``), decorators excluded."""
    sizes: dict[str, int] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = str(path.relative_to(ROOT))
        _walk(tree, where, "", sizes)
    return sizes


def _walk(node: ast.AST, where: str, scope: str, sizes: dict[str, int]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{scope}{child.name}"
            end = child.end_lineno or child.lineno
            key = f"{where}:{name}"
            while key in sizes:  # an overload or a redefinition: keep each
                key += "'"
            sizes[key] = end - child.lineno + 1
            _walk(child, where, f"{name}.", sizes)
        elif isinstance(child, ast.ClassDef):
            _walk(child, where, f"{scope}{child.name}.", sizes)
        else:
            _walk(child, where, scope, sizes)


def plain_any_signatures(only_crossing: bool = False) -> list[str]:
    """``path:Class.function(param)`` of every public function or method under ``src/`` with a parameter
    or result typed plain ``Any`` (what another package calling it cannot have checked); with
    ``only_crossing``, only those of a function or class that crosses a package (:func:`crossing_names`)."""
    crossing = crossing_names() if only_crossing else None
    found: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        module = _module_name(path)
        for node in tree.body:
            if crossing is not None and (module, getattr(node, "name", "")) not in crossing:
                continue
            _any_walk(ast.Module(body=[node], type_ignores=[]), str(path.relative_to(ROOT)), "", found)
    return found


def _is_any(annotation: ast.expr | None) -> bool:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return annotation.value.strip() == "Any"
    return isinstance(annotation, ast.Name) and annotation.id == "Any"


def _any_walk(node: ast.AST, where: str, scope: str, found: list[str]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef) and not child.name.startswith("_"):
            _any_walk(child, where, f"{scope}{child.name}.", found)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            public = not child.name.startswith("_") or child.name == "__init__"
            if not public:
                continue
            args = [*child.args.posonlyargs, *child.args.args, *child.args.kwonlyargs]
            bad = [a.arg for a in args if _is_any(a.annotation)]
            bad += ["return"] if _is_any(child.returns) else []
            if bad:
                found.append(f"{where}:{scope}{child.name}({', '.join(bad)})")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """The package a module belongs to: ``asyncsched.web._router`` -> ``web``; a top-level module of
    ``asyncsched`` (``asyncsched._boundary``) is a package of its own; ``asyncsched`` itself is ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def crossing_names() -> set[tuple[str, str]]:
    """``(module, name)`` of every top-level function or class of ``src/`` that a module of another
    package imports (``from m import name``, re-exports followed, or ``from pkg import m`` then
    ``m.name``), or that a package exports to users (a package ``__init__``'s imports)."""
    trees: dict[str, tuple[ast.Module, bool]] = {}
    for path in sorted(SRC.rglob("*.py")):
        trees[_module_name(path)] = (ast.parse(path.read_text(encoding="utf-8")), path.name == "__init__.py")
    defined = {
        (module, node.name)
        for module, (tree, _) in trees.items()
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    aliases: dict[tuple[str, str], tuple[str, str]] = {}  # (module, name) re-exported from (source, name)
    uses: list[tuple[str, tuple[str, str]]] = []  # (importing module, (module, name))
    for module, (tree, is_package) in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _absolute(module, is_package, node)
            for alias in node.names:
                if alias.name == "*":
                    names = [name for (mod, name) in defined if mod == source]
                    for name in names:
                        aliases.setdefault((module, name), (source, name))
                    continue
                aliases.setdefault((module, alias.asname or alias.name), (source, alias.name))
                uses.append((module, (source, alias.name)))
                if f"{source}.{alias.name}" in trees:  # a module: its attributes used here
                    local = alias.asname or alias.name
                    uses.extend(
                        (module, (f"{source}.{alias.name}", sub.attr))
                        for sub in ast.walk(tree)
                        if isinstance(sub, ast.Attribute)
                        and isinstance(sub.value, ast.Name)
                        and sub.value.id == local
                    )

    def resolve(target: tuple[str, str]) -> tuple[str, str]:
        seen = set()
        while target not in defined and target in aliases and target not in seen:
            seen.add(target)
            target = aliases[target]
        return target

    crossing = set()
    for importer, target in uses:
        where = resolve(target)
        if where in defined and (
            package_of(importer) != package_of(where[0]) or (trees[importer][1] and importer != where[0])
        ):
            crossing.add(where)
    bases = {  # a crossing class's methods include those it inherits from our own classes
        (module, node.name): [resolve((module, base.id)) for base in node.bases if isinstance(base, ast.Name)]
        for module, (tree, _) in trees.items()
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }
    todo = [name for name in crossing if name in bases]
    while todo:
        for base in bases.get(todo.pop(), []):
            if base in defined and base not in crossing:
                crossing.add(base)
                todo.append(base)
    return crossing


def check_any(*, list_all: bool = False) -> list[str]:
    """The broken ``Any`` budget: crossing signatures typed plain ``Any`` and not allowed (see the module
    docs); the package-internal ones are reported (listed with ``list_all``), stale allowances noted."""
    crossing = plain_any_signatures(only_crossing=True)
    typed_any = plain_any_signatures()
    per_package: dict[str, int] = {}
    for entry in typed_any:
        package = entry.split(":")[0].removeprefix("src/asyncsched/").split("/")[0].removesuffix(".py")
        per_package[package] = per_package.get(package, 0) + 1
    spread = ", ".join(f"{name} {n}" for name, n in sorted(per_package.items()))
    print(
        f"report: {len(typed_any)} public signature(s) with a plain Any ({spread or 'none'}); "
        f"{len(crossing)} of them cross a package ({len(ANY_ALLOWED)} allowed)"
    )
    for entry in typed_any if list_all else []:
        print(f"  {entry}{'  [crosses]' if entry in crossing else ''}")
    for entry in sorted(set(ANY_ALLOWED) - set(crossing)):
        print(f"note: {entry} is no longer a crossing Any: drop it from ANY_ALLOWED")
    return [
        f"{entry}: plain Any in a signature that crosses a package (type it, or allow it with a reason)"
        for entry in crossing
        if entry not in ANY_ALLOWED
    ]


class LuaParseError(ValueError):
    """A Lua script whose blocks the measurement cannot match (its size would be a guess: it fails)."""


_LUA_OPENERS = frozenset({"function", "do", "if", "repeat"})  # `while`/`for` open with their `do`
_LUA_LONG = re.compile(r"\[(=*)\[")
_LUA_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LUA_NUMBER = re.compile(r"[0-9][A-Za-z0-9_.]*")


def lua_tokens(text: str) -> list[tuple[str, int]]:
    """The tokens of a Lua source with their line (1-based): words and single punctuation characters;
    a string is one ``"<str>"`` token at the line it starts on; comments are dropped. An unfinished string
    or long comment raises :class:`LuaParseError`."""
    tokens: list[tuple[str, int]] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("--", i):
            long = _LUA_LONG.match(text, i + 2)
            if long is None:  # to the end of the line
                stop = text.find("\n", i)
                i = n if stop < 0 else stop
            else:
                stop = _lua_long_end(text, long, line)
                line += text.count("\n", i, stop)
                i = stop
        elif c in "'\"":
            start = line
            i += 1
            while i < n and text[i] != c:
                if text[i] == "\n":
                    raise LuaParseError(f"line {start}: unfinished string")
                if text[i] == "\\":  # an escape: the next character is the string's (a newline too)
                    if text[i + 1 : i + 2] == "\n":
                        line += 1
                    i += 1
                i += 1
            if i >= n:
                raise LuaParseError(f"line {start}: unfinished string")
            tokens.append(("<str>", start))
            i += 1
        elif (long := _LUA_LONG.match(text, i)) is not None:
            stop = _lua_long_end(text, long, line)
            tokens.append(("<str>", line))
            line += text.count("\n", i, stop)
            i = stop
        elif (word := _LUA_WORD.match(text, i) or _LUA_NUMBER.match(text, i)) is not None:
            tokens.append((word.group(), line))
            i = word.end()
        else:
            tokens.append((c, line))
            i += 1
    return tokens


def _lua_long_end(text: str, opened: re.Match[str], line: int) -> int:
    close = "]" + opened.group(1) + "]"
    stop = text.find(close, opened.end())
    if stop < 0:
        raise LuaParseError(f"line {line}: unfinished long string or comment")
    return stop + len(close)


def _lua_function_name(tokens: list[tuple[str, int]], k: int) -> str | None:
    """The name of the function whose ``function`` keyword is ``tokens[k]``: ``function a.b:c(``,
    ``local function f(``, ``f = function(``; ``None`` for an anonymous one (part of its enclosing code)."""
    parts: list[str] = []
    j = k + 1
    while j < len(tokens) and _LUA_WORD.fullmatch(tokens[j][0]):
        parts.append(tokens[j][0])
        if j + 1 < len(tokens) and tokens[j + 1][0] in ".:":
            parts.append(tokens[j + 1][0])
            j += 2
        else:
            break
    if parts:
        return "".join(parts)
    assigned = k >= 2 and tokens[k - 1][0] == "=" and _LUA_WORD.fullmatch(tokens[k - 2][0]) is not None
    if assigned and not (k >= 3 and tokens[k - 3][0] in "=~<>"):  # `f = function`, not `x == function`
        return tokens[k - 2][0]
    return None


def lua_functions(text: str) -> tuple[dict[str, int], int]:
    """The named functions of a Lua source with their lines (``outer.inner`` for a nested one, whose lines
    count in its outer function too, as in Python), and the lines of its main chunk: from its first to its
    last statement outside every named function, less those functions and the comment or blank lines right
    above each (its description); 0 when all the code is in functions. Blocks are matched by their keywords
    (``function``/``if``/``do``/``repeat`` against ``end``/``until``) outside strings and comments; a source
    whose blocks do not match raises :class:`LuaParseError`."""
    tokens = lua_tokens(text)
    stack: list[tuple[str, int, str | None]] = []  # (opener, line, qualified name of a named function)
    sizes: dict[str, int] = {}
    spans: list[tuple[int, int]] = []  # lines of the top-level named functions
    code_lines = {line for _, line in tokens}
    for k, (token, line) in enumerate(tokens):
        named = [frame[2] for frame in stack if frame[2] is not None]
        if token in _LUA_OPENERS:
            name = _lua_function_name(tokens, k) if token == "function" else None
            qualified = None if name is None else ".".join([*named, name])
            stack.append((token, line, qualified))
        elif token in ("end", "until"):
            if not stack:
                raise LuaParseError(f"line {line}: `{token}` closes no block")
            opener, start, qualified = stack.pop()
            if (opener == "repeat") != (token == "until"):
                raise LuaParseError(f"line {line}: `{token}` closes the `{opener}` of line {start}")
            if qualified is not None:
                key = qualified
                while key in sizes:  # a redefinition: keep each
                    key += "'"
                sizes[key] = line - start + 1
                if not any(frame[2] for frame in stack):
                    spans.append((start, line))
    if stack:
        opener, start, _ = stack[-1]
        raise LuaParseError(f"line {start}: `{opener}` is never closed")
    covered = {n for start, stop in spans for n in range(start, stop + 1)}
    for start, _ in spans:  # a function's description: the comment or blank lines right above it
        above = start - 1
        while above >= 1 and above not in covered and above not in code_lines:
            covered.add(above)
            above -= 1
    main = sorted(code_lines - covered)
    if not main:
        return sizes, 0
    return sizes, sum(1 for n in range(main[0], main[-1] + 1) if n not in covered)


def lua_sizes() -> tuple[dict[str, int], list[str]]:
    """Lines of every Lua function under ``src/`` (``path:name``) and of each script's main chunk
    (``path:<main>``), with the scripts that could not be measured (each a broken budget)."""
    sizes: dict[str, int] = {}
    unreadable: list[str] = []
    for path in sorted(SRC.rglob("*.lua")):
        where = str(path.relative_to(ROOT))
        try:
            functions, main = lua_functions(path.read_text(encoding="utf-8"))
        except LuaParseError as error:
            unreadable.append(f"{where}: cannot measure its Lua functions ({error})")
            continue
        sizes.update({f"{where}:{name}": size for name, size in functions.items()})
        if main:
            sizes[f"{where}:<main>"] = main
    return sizes, unreadable


def read_allow() -> dict[str, int]:
    """The allow-list: ``name size`` per line (``#`` starts a comment)."""
    allow: dict[str, int] = {}
    if not ALLOW.exists():
        return allow
    for number, raw in enumerate(ALLOW.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, size = line.rpartition(" ")
        if not name or not size.isdigit():
            raise SystemExit(f"{ALLOW.relative_to(ROOT)}:{number}: expected `name size`, got {raw!r}")
        allow[name.strip()] = int(size)
    return allow


def check_sizes(sizes: dict[str, int], limit: int, allow: dict[str, int], what: str) -> list[str]:
    """The broken budgets among ``sizes``; notes on entries that can be lowered go to stdout."""
    broken = []
    for name, size in sizes.items():
        if size <= limit:
            if name in allow:
                print(f"note: {name} is within budget ({size} <= {limit}): drop it from the allow-list")
            continue
        listed = allow.get(name)
        if listed is None:
            broken.append(f"{name}: {what} of {size} lines (budget {limit}), not on the allow-list")
        elif size > listed:
            broken.append(f"{name}: {what} grew to {size} lines (allowed {listed}, budget {limit})")
        elif size < listed:
            print(f"note: {name} shrank to {size} lines (listed {listed}): `--tighten` lowers the entry")
    return broken


def count_duplicates() -> int | None:
    """Pairs of repeated places in ``src/`` by the ``duplicates`` command; ``None`` without it."""
    if shutil.which("duplicates") is None:
        return None
    done = subprocess.run(
        ["duplicates", "--repo", str(SRC), "--most", "200", "--seconds", "120"],
        capture_output=True,
        text=True,
        check=False,
    )
    first = (done.stdout.splitlines() or [""])[0]
    if first.startswith("no duplicates"):
        return 0
    match = _PAIRS.match(first)
    if match is None:
        print(f"note: cannot read the duplicates count from {first!r}; skipped")
        return None
    return int(match.group(1))


def tighten(allow: dict[str, int], sizes: dict[str, int], limits: dict[str, int]) -> None:
    """Rewrite the allow-list: each entry lowered to today's size, entries within budget dropped."""
    lines = [line for line in ALLOW.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    for name, listed in allow.items():
        size = sizes.get(name)
        if size is None or size <= limits[name]:
            continue
        lines.append(f"{name} {min(size, listed)}")
    ALLOW.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{ALLOW.relative_to(ROOT)}: {len(lines)} line(s) written")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-mypy", action="store_true", help="do not run mypy (it ran just before)")
    parser.add_argument("--tighten", action="store_true", help="lower the allow-list to today's sizes")
    parser.add_argument("--list-any", action="store_true", help="list the public signatures typed Any")
    args = parser.parse_args(argv)

    allow = read_allow()
    modules, functions = module_sizes(), function_sizes()
    broken = check_sizes(modules, MODULE_LINES, allow, "module")
    broken += check_sizes(functions, FUNCTION_LINES, allow, "function")
    lua, unreadable = lua_sizes()
    broken += unreadable
    broken += check_sizes(lua, FUNCTION_LINES, allow, "Lua function")
    functions.update(lua)

    broken += check_any(list_all=args.list_any)

    pairs = count_duplicates()
    if pairs is None:
        print("note: the `duplicates` command is not on this machine; repeated code not counted")
    else:
        listed = allow.get("duplicates", DUPLICATE_PAIRS)
        print(f"duplicates: {pairs} pair(s) in src/ (allowed {listed}, budget {DUPLICATE_PAIRS})")
        if pairs > listed:
            broken.append(f"duplicates: {pairs} pairs of repeated places in src/ (allowed {listed})")
        modules["duplicates"] = pairs

    if args.tighten:
        limits = {**dict.fromkeys(modules, MODULE_LINES), **dict.fromkeys(functions, FUNCTION_LINES)}
        limits["duplicates"] = DUPLICATE_PAIRS
        tighten(allow, {**modules, **functions}, limits)

    mypy = [sys.executable, "-m", "mypy"]
    if not args.skip_mypy and subprocess.run(mypy, cwd=ROOT, check=False).returncode != 0:
        broken.append("mypy (strict) failed")

    for line in broken:
        print(f"OVER BUDGET: {line}")
    over = sum(1 for n, s in {**modules, **functions}.items() if n != "duplicates" and n in allow and s)
    print(f"budgets: {len(broken)} broken; {over} known excess(es) on the allow-list, which may only shrink")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
