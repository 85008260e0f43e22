"""Function references: callables and ``"package.module:function"`` paths to RQ's dotted names, and back."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..exceptions import InvalidJob

__all__ = ["func_name", "import_function"]


_checked: dict[str, str] = {}  # path -> dotted name, for paths already validated


def func_name(func: Callable[..., Any] | str) -> str:
    """RQ's ``func_name`` (``module.qualname``) for a callable or a ``module:attr`` / ``module.attr`` path."""
    if isinstance(func, str):
        name = _checked.get(func)
        if name is None:
            name = func.strip().replace(":", ".")
            if not name or "." not in name or any(not part.isidentifier() for part in name.split(".")):
                raise InvalidJob(f"function path {func!r} is not 'package.module:function'")
            if len(_checked) >= 1024:
                _checked.clear()
            _checked[func] = name
        return name
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname:
        raise InvalidJob(f"{func!r} is not an importable function; pass a function or 'module:function'")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise InvalidJob(f"{module}.{qualname} cannot be imported by a worker; define it at module level")
    if module == "__main__":
        raise InvalidJob(
            f"{qualname} is defined in __main__, which a worker cannot import; move it to a module"
        )
    return f"{module}.{qualname}"


_imported: dict[str, Callable[..., Any]] = {}


def import_function(name: str) -> Callable[..., Any]:
    """Import a dotted ``module.attr[.attr]`` (or ``module:attr``) name; ``InvalidJob`` naming what failed.

    Successful imports are cached by name (modules are cached by Python anyway).
    """
    func = _imported.get(name)
    if func is None:
        func = _imported[name] = _import(name)
    return func


def _import(name: str) -> Callable[..., Any]:
    dotted = name.replace(":", ".")
    parts = dotted.split(".")
    error: Exception | None = None
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                error = error or exc
                continue
            raise InvalidJob(f"cannot import function {name!r}: {exc}") from exc
        except Exception as exc:
            raise InvalidJob(f"cannot import function {name!r}: {type(exc).__name__}: {exc}") from exc
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            if error is not None:
                raise InvalidJob(f"cannot import function {name!r}: {error}") from None
            raise InvalidJob(
                f"cannot import function {name!r}: module {module_name!r} has no attribute "
                f"{'.'.join(parts[cut:])!r}"
            ) from None
        if not callable(obj):
            raise InvalidJob(f"{name!r} is not callable")
        return obj  # type: ignore[no-any-return]
    raise InvalidJob(f"cannot import function {name!r}: {error or 'no module'}")
