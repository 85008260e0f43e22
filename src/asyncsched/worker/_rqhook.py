"""``rq.get_current_job()`` seeing the jobs our worker runs, without the worker importing ``rq``: importing it
costs every worker ~5.6 MB of memory, for a feature only jobs written for RQ use. ``rq.job`` already
imported is patched at once; otherwise an import hook patches it when some code imports it (a job module, a
callback, a job function as it runs)."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any

from ._rqjob import _RQJobStack, _RQJobVar

__all__ = ["install_rq_current_job"]


def install_rq_current_job() -> None:
    """Make ``rq.get_current_job()`` see jobs our worker runs: now, or when ``rq.job`` is imported (no-op
    without ``rq``; idempotent)."""
    module: Any = sys.modules.get("rq.job")
    if module is not None:
        _patch_rq_job(module)
    elif not any(isinstance(f, _RQJobImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _RQJobImportHook())


def _patch_rq_job(module: Any) -> None:
    var = getattr(module, "_current_job", None)  # RQ 3: a ContextVar
    if var is not None and not isinstance(var, _RQJobVar):
        module._current_job = _RQJobVar(var)
    stack = getattr(module, "_job_stack", None)  # RQ 2: a LocalStack
    if stack is not None and not isinstance(stack, _RQJobStack):
        module._job_stack = _RQJobStack(stack)


class _RQJobImportHook(importlib.abc.MetaPathFinder):
    """Finds ``rq.job`` with the other finders and has the module patched once it has run. It stays in
    ``sys.meta_path`` (taking it out could make an import running in another thread skip a finder)."""

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "rq.job":
            return None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    """``rq.job``'s own loader, which patches the module after running it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._inner.exec_module(module)
        _patch_rq_job(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ... (tracebacks, inspect)
        return getattr(self._inner, name)
