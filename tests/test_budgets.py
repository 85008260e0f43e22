"""scripts/budgets.py: what is over budget must be on the allow-list, and may only shrink (issue 19)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _budgets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("budgets", ROOT / "scripts" / "budgets.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_over_budget_and_not_listed_fails() -> None:
    broken = _budgets().check_sizes({"a.py": 401, "b.py": 400}, 400, {}, "module")
    assert broken == ["a.py: module of 401 lines (budget 400), not on the allow-list"]


def test_a_listed_module_may_shrink_but_not_grow(capsys: pytest.CaptureFixture[str]) -> None:
    budgets = _budgets()
    assert budgets.check_sizes({"a.py": 450}, 400, {"a.py": 450}, "module") == []
    assert budgets.check_sizes({"a.py": 420}, 400, {"a.py": 450}, "module") == []
    assert "shrank to 420" in capsys.readouterr().out
    assert budgets.check_sizes({"a.py": 451}, 400, {"a.py": 450}, "module") == [
        "a.py: module grew to 451 lines (allowed 450, budget 400)"
    ]


def test_functions_are_measured_by_their_qualified_name() -> None:
    budgets = _budgets()
    source = "class A:\n    def f(self):\n" + "        x = 1\n" * 70 + "\ndef g():\n    pass\n"
    sizes: dict[str, int] = {}
    budgets._walk(ast.parse(source), "m.py", "", sizes)
    assert sizes == {"m.py:A.f": 71, "m.py:g": 2}


def test_the_tree_holds_its_budgets() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/budgets.py", "--skip-mypy"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_plain_any_fails_only_where_it_crosses_a_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = _budgets()
    src = tmp_path / "src"
    files = {
        "asyncsched/__init__.py": "",
        "asyncsched/a/__init__.py": "from ._m import Exported\n",
        "asyncsched/a/_m.py": (
            "from typing import Any\n"
            "def imported(x: Any) -> None: ...\n"
            "def local(x: Any) -> None: ...\n"
            "def via_module(x: Any) -> None: ...\n"
            "class Base:\n    def inherited(self) -> Any: ...\n"
            "class Exported(Base):\n    def method(self, *args: Any, x: dict[str, Any]) -> None: ...\n"
        ),
        "asyncsched/a/_user.py": "from ._m import local\n",
        "asyncsched/b/__init__.py": "",
        "asyncsched/b/_n.py": "from ..a._m import imported\nfrom ..a import _m\n_m.via_module(1)\n",
    }
    for name, text in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    monkeypatch.setattr(budgets, "ROOT", tmp_path)
    monkeypatch.setattr(budgets, "SRC", src)
    monkeypatch.setattr(budgets, "ANY_ALLOWED", {})
    crossing = budgets.plain_any_signatures(only_crossing=True)
    assert crossing == [
        "src/asyncsched/a/_m.py:imported(x)",
        "src/asyncsched/a/_m.py:via_module(x)",
        "src/asyncsched/a/_m.py:Base.inherited(return)",
    ]
    assert len(budgets.plain_any_signatures()) == 4  # `local` is reported, not failed
    assert len(budgets.check_any()) == 3


def test_lua_functions_are_measured_by_their_blocks() -> None:
    budgets = _budgets()
    source = (
        "-- header: KEYS and ARGV\n"  # 1: the script's description, not its main chunk
        "local p = ARGV[1]\n"  # 2: main starts
        "\n"  # 3
        "-- what outer does\n"  # 4: outer's description
        "local function outer(a)\n"  # 5
        "  local function inner(b)\n"  # 6
        "    if b then return 'end' end\n"  # 7: a string holding `end`
        '    local s = "function ( if \\" do"  -- end\n'  # 8: keywords in a string and a comment
        "  end\n"  # 9
        "  for i = 1, 2 do\n"  # 10
        "    repeat a = a + 1 until a > i\n"  # 11
        "  end\n"  # 12
        "  --[[ end\n"  # 13: a long comment
        "  end ]]\n"  # 14
        "  local t = [==[ end\n"  # 15: a long string
        "  ]==]\n"  # 16
        "  while a do a = pcall(function() return 'x' end) end\n"  # 17: an anonymous function
        "  return inner(a)\n"  # 18
        "end\n"  # 19
        "local q = outer(p)\n"  # 20: main again
        "local f = function(x)\n"  # 21
        "  do return x end\n"  # 22
        "end\n"  # 23
        "-- a comment of main\n"  # 24
        "q = f(q)\n"  # 25
        "return q\n"  # 26: main ends
    )
    sizes, main = budgets.lua_functions(source)
    assert sizes == {"outer": 15, "outer.inner": 4, "f": 3}
    assert main == 5  # lines 2, 20 and 24 to 26 (3 and 4 describe outer)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("local function f()\n  if x then\n  end\n", "`function` is never closed"),
        ("if x then\nend\nend\n", "line 3: `end` closes no block"),
        ("repeat\n  x()\nend\n", "`end` closes the `repeat` of line 1"),
        ("local s = 'end\n", "unfinished string"),
        ("--[[ a comment\nend\n", "unfinished long string or comment"),
    ],
)
def test_a_lua_script_whose_blocks_do_not_match_fails(source: str, why: str) -> None:
    budgets = _budgets()
    with pytest.raises(budgets.LuaParseError, match=why):
        budgets.lua_functions(source)


def test_a_lua_function_over_budget_fails_unless_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budgets = _budgets()
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.lua").write_text("local function big()\n" + "  x()\n" * 60 + "end\n" + "y()\n" * 61)
    (src / "broken.lua").write_text("if x then\n")
    monkeypatch.setattr(budgets, "ROOT", tmp_path)
    monkeypatch.setattr(budgets, "SRC", src)
    sizes, unreadable = budgets.lua_sizes()
    assert sizes == {"src/big.lua:big": 62, "src/big.lua:<main>": 61}
    assert unreadable == ["src/broken.lua: cannot measure its Lua functions (line 1: `if` is never closed)"]
    assert budgets.check_sizes(sizes, 60, {"src/big.lua:big": 62}, "Lua function") == [
        "src/big.lua:<main>: Lua function of 61 lines (budget 60), not on the allow-list"
    ]
