"""Function references: the one rule by which a text names code to run (``docs/security.md``).

A reference is ``module:qualname``. It resolves only to an object *defined* in that module: every step of
``qualname`` is looked up in the namespace of the module (or of a class defined there), never inherited,
never through a module ``__getattr__``, and the object found must carry ``__module__ == module`` and
``__qualname__ == qualname``. So ``app.services:os.system`` (a module imported by ``app.services``),
``app.services:run`` (``from subprocess import run``) and ``app.x:__class__`` all fail; no part may start
with ``__``; a missing submodule is an error, never a fallback to attribute lookup.

The allow-list (``ASYNCSCHED_ALLOWED_FUNCTIONS``) is judged first on the text, *before* anything is imported
(a module that is not allowed is never imported), then again on the resolved object's real module and name.

RQ stores ``func_name`` dotted (``module.qualname``); :func:`import_function` resolves those with the same
rule, trying the longest importable module prefix.

Every caller uses these functions: the API (:func:`resolve_function` with the allow-list), the task
definition check of YAML files and code (:func:`check_function`), :meth:`TaskQueue.enqueue`
(:func:`func_name`) and the worker (:func:`import_function`).
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..exceptions import FunctionNotAllowed, InvalidJob

__all__ = [
    "FUNCTION_PATTERN",
    "MAX_REFERENCE",
    "FunctionRef",
    "check_function",
    "func_name",
    "function_allowed",
    "import_function",
    "parse_reference",
    "reference_for",
    "resolve_function",
]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"
FUNCTION_PATTERN = rf"^{_DOTTED}:{_DOTTED}$"
"""The reference syntax as a JSON Schema (ECMA) pattern, where ``$`` is the end of the text."""
_REFERENCE_RE = re.compile(rf"\A({_DOTTED}):({_DOTTED})\Z")
_DOTTED_RE = re.compile(rf"\A{_DOTTED}\Z")
MAX_REFERENCE = 500
"""Longest reference accepted (characters)."""


@dataclass(frozen=True)
class FunctionRef:
    """A syntactically valid reference: ``module`` and ``qualname`` (nothing imported yet)."""

    module: str
    qualname: str

    def __str__(self) -> str:
        return f"{self.module}:{self.qualname}"

    @property
    def dotted(self) -> str:
        """RQ's ``func_name`` form, ``module.qualname``."""
        return f"{self.module}.{self.qualname}"


def _check_parts(text: str, parts: Iterable[str]) -> None:
    for part in parts:
        if part.startswith("__"):
            raise InvalidJob(f"function reference {text!r} has a part starting with '__' ({part!r})")


def parse_reference(text: object) -> FunctionRef:
    """``"package.module:function"`` checked as text only (ASCII identifiers, no ``__`` parts, nothing
    around it, at most :data:`MAX_REFERENCE` characters); :class:`InvalidJob` says what is wrong."""
    if not isinstance(text, str):
        raise InvalidJob(f"function reference must be text 'package.module:function', got {text!r}")
    match = _REFERENCE_RE.match(text) if len(text) <= MAX_REFERENCE else None
    if match is None:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidJob(f"function reference {shown!r} is not 'package.module:function'")
    ref = FunctionRef(match.group(1), match.group(2))
    _check_parts(text, (*ref.module.split("."), *ref.qualname.split(".")))
    return ref


def function_allowed(ref: FunctionRef | str, allow_list: Iterable[str]) -> bool:
    """Whether ``ref`` matches an allow-list entry: ``*``, a module prefix on dotted boundaries
    (``app.services`` allows ``app.services:f`` and ``app.services.email:g``, not ``app.servicesx:h``), or
    one exact ``module:qualname``. A text that is not a valid reference is never allowed."""
    if isinstance(ref, str):
        try:
            ref = parse_reference(ref)
        except InvalidJob:
            return False
    for entry in allow_list:
        entry = entry.strip()
        if not entry:
            continue
        if entry == "*":
            return True
        if ":" in entry:
            if str(ref) == entry:
                return True
            continue
        prefix = entry.rstrip(".")
        if ref.module == prefix or ref.module.startswith(prefix + "."):
            return True
    return False


class _NoModule(InvalidJob):
    """The module (or a package above it) does not exist; ``python`` is Python's own message."""

    def __init__(self, message: str, python: str) -> None:
        super().__init__(message)
        self.python = python


def _import(module: str) -> ModuleType:
    """THE import of user code (every reference resolved by this module goes through here).

    Raises :class:`_NoModule` when ``module`` or a package above it does not exist, :class:`InvalidJob` for
    any other failure of user code at import time (a finding, not a crash)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise _NoModule(
                f"cannot import module {module!r}: no module named {missing!r}", str(exc)
            ) from None
        raise InvalidJob(f"cannot import module {module!r}: ModuleNotFoundError: {exc}") from None
    except Exception as exc:
        raise InvalidJob(f"cannot import module {module!r}: {type(exc).__name__}: {exc}") from None


def _what(obj: object) -> str:
    if isinstance(obj, ModuleType):
        return f"the module {obj.__name__!r}"
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}:{qualname}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__} object"


def _walk(module: ModuleType, ref: FunctionRef) -> Callable[..., Any]:
    """The object ``ref.qualname`` names, defined in ``module`` step by step, or :class:`InvalidJob`."""
    obj: Any = module
    done: list[str] = []
    for part in ref.qualname.split("."):
        owner = f"module {ref.module!r}" if not done else f"class {ref.module}:{'.'.join(done)}"
        if done and not isinstance(obj, type):
            raise InvalidJob(f"{str(ref)!r}: {owner} is not a class; only Class.method may be nested")
        namespace = vars(obj)
        if part not in namespace:
            raise InvalidJob(f"{owner} has no attribute {part!r} of its own (function {str(ref)!r})")
        obj = namespace[part] if not done else getattr(obj, part)
        done.append(part)
        qualname = ".".join(done)
        if getattr(obj, "__module__", None) != ref.module or getattr(obj, "__qualname__", None) != qualname:
            raise InvalidJob(
                f"{str(ref)!r}: {ref.module}:{qualname} is {_what(obj)}, not a function defined in "
                f"module {ref.module!r}; name the function where it is defined"
            )
    if not callable(obj):
        raise InvalidJob(f"{str(ref)!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _not_allowed(ref: FunctionRef, allow_list: tuple[str, ...]) -> FunctionNotAllowed:
    if allow_list:
        return FunctionNotAllowed(
            f"function {str(ref)!r} is not on the allow-list (ASYNCSCHED_ALLOWED_FUNCTIONS)"
        )
    return FunctionNotAllowed(f"function {str(ref)!r} is not allowed (the allow-list is empty)")


def resolve_function(
    reference: str | FunctionRef, *, allow: Iterable[str] | None = None
) -> Callable[..., Any]:
    """THE resolution of a ``module:qualname`` reference (see the module docstring).

    ``allow``: an allow-list (``None``: any function defined in its module). It is checked on the text
    before the module is imported, and on the resolved object's ``__module__``/``__qualname__`` after.
    Raises :class:`InvalidJob` (bad text, import failure, not defined there, not callable) or
    :class:`FunctionNotAllowed`.
    """
    ref = reference if isinstance(reference, FunctionRef) else parse_reference(reference)
    allow_list = None if allow is None else tuple(allow)
    if allow_list is not None and not function_allowed(ref, allow_list):
        raise _not_allowed(ref, allow_list)
    func = _walk(_import(ref.module), ref)
    real = FunctionRef(func.__module__, func.__qualname__)
    if allow_list is not None and not function_allowed(real, allow_list):
        raise _not_allowed(real, allow_list)
    return func


def check_function(reference: str, *, allow: Iterable[str] | None = None) -> str | None:
    """``None`` if :func:`resolve_function` accepts ``reference``, else what is wrong (one line)."""
    try:
        resolve_function(reference, allow=allow)
    except (InvalidJob, FunctionNotAllowed) as exc:
        return str(exc)
    return None


_names: dict[Any, str] = {}  # callable or text -> dotted name, for ones already checked


def func_name(func: Callable[..., Any] | str) -> str:
    """RQ's ``func_name`` (``module.qualname``) for a callable or a reference, checked by the same rule.

    A text (``module:qualname``, or RQ's dotted ``module.qualname``) is checked as text only: producers need
    not be able to import the workers' code. A callable must be found again from its module and qualname
    (so no lambdas, locals, instance methods, partials or ``__main__`` functions).
    """
    try:
        name = _names.get(func)
    except TypeError:  # unhashable callable
        name = None
    if name is None:
        name = _text_name(func) if isinstance(func, str) else _callable_name(func)
        if len(_names) >= 1024:
            _names.clear()
        with contextlib.suppress(TypeError):
            _names[func] = name
    return name


def _text_name(text: str) -> str:
    if ":" in text:
        return parse_reference(text).dotted
    if len(text) > MAX_REFERENCE or not _DOTTED_RE.match(text) or "." not in text:
        raise InvalidJob(f"function path {text[:80]!r} is not 'package.module:function'")
    _check_parts(text, text.split("."))
    return text


def _callable_name(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise InvalidJob(f"{func!r} is not an importable function; pass a function or 'module:function'")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise InvalidJob(f"{module}.{qualname} cannot be imported by a worker; define it at module level")
    if module == "__main__":
        raise InvalidJob(
            f"{qualname} is defined in __main__, which a worker cannot import; move it to a module"
        )
    ref = parse_reference(f"{module}:{qualname}")
    found = resolve_function(ref)
    if found is not func and found != func:
        raise InvalidJob(
            f"{func!r} is not what {str(ref)!r} names (an instance's method, or a replaced name); "
            "pass a function defined at module level"
        )
    return ref.dotted


_imported: dict[tuple[str, tuple[str, ...] | None], Callable[..., Any]] = {}


def import_function(name: str, *, allow: Iterable[str] | None = None) -> Callable[..., Any]:
    """The function of a job: ``module:qualname``, or RQ's dotted ``module.qualname`` resolved by the same
    rule (the longest importable module prefix names the module; the rest must be defined in it).

    With ``allow``, a candidate module that the allow-list does not cover is never imported.
    Raises :class:`InvalidJob` or :class:`FunctionNotAllowed`. Successes are cached.
    """
    key = (name, None if allow is None else tuple(allow))
    func = _imported.get(key)
    if func is None:
        func = _import_dotted(name, key[1]) if ":" not in name else resolve_function(name, allow=key[1])
        if len(_imported) >= 4096:
            _imported.clear()
        _imported[key] = func
    return func


def _import_dotted(name: str, allow: tuple[str, ...] | None) -> Callable[..., Any]:
    dotted = _text_name(name)
    parts = dotted.split(".")
    denied: FunctionRef | None = None
    missing: str | None = None  # Python's message for the longest module that does not exist
    for cut in range(len(parts) - 1, 0, -1):
        ref = FunctionRef(".".join(parts[:cut]), ".".join(parts[cut:]))
        if allow is not None and not function_allowed(ref, allow):
            denied = denied or ref
            continue
        try:
            module = _import(ref.module)
        except _NoModule as exc:
            missing = missing or exc.python
            continue
        try:
            return resolve_function(ref, allow=allow) if allow is not None else _walk(module, ref)
        except InvalidJob as exc:
            raise InvalidJob(f"{missing}; and {exc}" if missing else str(exc)) from None
    if denied is not None:
        raise _not_allowed(denied, allow or ())
    raise InvalidJob(f"cannot import function {name!r}: {missing or 'no module of it can be imported'}")


def reference_for(name: str, *, check_import: bool = True) -> str:
    """``module:qualname`` for RQ's dotted ``name`` (``module:qualname`` is returned as is).

    With ``check_import``, :func:`import_function` resolves it by the one rule and the function's own module
    and qualname are returned; otherwise (or when it does not resolve) the last dotted part is taken as the
    qualname, and whoever uses the reference checks it again.
    """
    if ":" in name:
        return name
    if check_import:
        try:
            func = import_function(name)
        except (InvalidJob, FunctionNotAllowed):
            pass
        else:
            return f"{func.__module__}:{func.__qualname__}"
    module, _, qualname = name.rpartition(".")
    return f"{module}:{qualname}"
