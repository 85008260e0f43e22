"""Worker hooks: ``on_startup`` / ``on_shutdown`` around the worker's life, ``before_job`` / ``after_job``
around each job.

* ``on_startup(ctx)`` / ``on_shutdown(ctx)``: ``ctx`` is the worker's shared resources dict; what
  ``on_startup`` puts there (a DB pool, an HTTP client) every job sees as ``current_job().resources``.
  They run when the worker is entered (``async with Worker(...)``, or at :meth:`Worker.run` without it) and
  when it exits. An ``on_startup`` that raises stops the worker: :class:`WorkerHookError` names the hook
  (the worker never takes a job). An ``on_shutdown`` that raises is logged.
* ``before_job(job)`` / ``after_job(job)``: ``job`` is the :class:`~asyncsched.worker.CurrentJob`; in
  ``after_job`` its ``outcome`` (``finished``, ``failed``, ``stopped``, ``retry``, ``requeue``), ``error``
  and ``result`` are set. A ``before_job`` that raises fails the job without running it (its retry policy
  applies, as for an exception of the job); an ``after_job`` that raises is logged and changes nothing.
  Either way the outcome is recorded and the worker goes on.

Any hook may be ``async def`` (awaited on the worker's loop) or ``def`` (run in the worker's job threads,
with the job's context: ``current_job()`` works there). Hooks are given to :class:`Worker` directly or by
reference (``--hooks module:object``): the object, resolved by the one function-reference rule
(:func:`~asyncsched.queue._functions.resolve_function`), is a class or a factory function called with no
arguments; the hooks are the attributes of what it returns with the four names above (or the keys of a
mapping it returns).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigurationError, FunctionNotAllowed, InvalidJob, WorkerHookError
from ..queue._functions import resolve_function
from ._job import ClaimedJob, Outcome, OutcomeKind, Prepared, execute, failure
from ._rqjob import CurrentJob, JobOutcome

__all__ = ["HOOK_NAMES", "Hooks", "WorkerHookError", "call_hook", "load_hooks", "run_hooked"]

log = logging.getLogger("asyncsched.worker")

HOOK_NAMES = ("on_startup", "on_shutdown", "before_job", "after_job")


@dataclass
class Hooks:
    """The hooks of one worker (each optional; see the module docstring)."""

    on_startup: Callable[..., Any] | None = None
    on_shutdown: Callable[..., Any] | None = None
    before_job: Callable[..., Any] | None = None
    after_job: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        for name in HOOK_NAMES:
            hook = getattr(self, name)
            if hook is not None and not callable(hook):
                raise ConfigurationError(f"worker hook {name} must be callable, got {type(hook).__name__}")

    @property
    def around_jobs(self) -> bool:
        """Whether any per-job hook is set (checked once, when the worker is made)."""
        return self.before_job is not None or self.after_job is not None


def hooks_from(obj: Any, where: str = "hooks") -> Hooks:
    """:class:`Hooks` from a ``Hooks``, a mapping of hook names, or an object with hook attributes."""
    if isinstance(obj, Hooks):
        return obj
    if isinstance(obj, Mapping):
        unknown = set(obj) - set(HOOK_NAMES)
        if unknown:
            raise ConfigurationError(f"{where}: unknown hook name(s) {sorted(unknown)}; use {HOOK_NAMES}")
        return Hooks(**dict(obj))
    found = {name: getattr(obj, name) for name in HOOK_NAMES if getattr(obj, name, None) is not None}
    if not found:
        raise ConfigurationError(f"{where}: has none of the hooks {', '.join(HOOK_NAMES)}")
    return Hooks(**found)


def load_hooks(reference: str) -> Hooks:
    """The hooks named by ``module:object`` (see the module docstring); :class:`ConfigurationError`
    naming the reference when it does not resolve or its object gives no hooks."""
    try:
        factory = resolve_function(reference)
    except (InvalidJob, FunctionNotAllowed) as exc:
        raise ConfigurationError(f"--hooks {reference}: {exc}") from None
    try:
        made = factory()
    except Exception as exc:
        raise ConfigurationError(
            f"--hooks {reference}: calling it failed: {type(exc).__name__}: {exc}"
        ) from exc
    return hooks_from(made, f"--hooks {reference}")


async def call_hook(hook: Callable[..., Any], executor: Executor | None, *args: Any) -> Any:
    """Await an ``async def`` hook on the loop; run a ``def`` hook in ``executor`` (``None``: the loop's
    default) with this context."""
    if inspect.iscoroutinefunction(hook):
        return await hook(*args)
    loop = asyncio.get_running_loop()
    value = await loop.run_in_executor(executor, contextvars.copy_context().run, hook, *args)
    if inspect.isawaitable(value):
        value = await value
    return value


def _name(hook: Callable[..., Any]) -> str:
    return getattr(hook, "__qualname__", None) or repr(hook)


async def run_hooked(
    hooks: Hooks, job: ClaimedJob, prep: Prepared, executor: Executor, ctx: CurrentJob
) -> Outcome:
    """``before_job``, the job (:func:`execute`), then ``after_job`` with its outcome."""
    if hooks.before_job is not None and prep.outcome is None:
        try:
            await call_hook(hooks.before_job, executor, ctx)
        except Exception as exc:
            log.exception(
                "job %s: before_job hook %s failed; the job is not run", job.id, _name(hooks.before_job)
            )
            text = f"before_job hook {_name(hooks.before_job)} failed:\n" + "".join(
                traceback.format_exception(exc)
            )
            out = failure(job, text, exc=exc)
            out.exc = exc
            prep = Prepared(outcome=out)
    outcome = await execute(job, prep, executor)
    if hooks.after_job is not None:
        retried = outcome.kind in (OutcomeKind.SCHEDULE, OutcomeKind.REQUEUE) and outcome.exc_text is not None
        ctx.outcome = JobOutcome.RETRY if retried else JobOutcome(outcome.kind)
        ctx.error = outcome.exc
        ctx.result = outcome.value
        try:
            await call_hook(hooks.after_job, executor, ctx)
        except Exception:
            log.exception(
                "job %s: after_job hook %s failed (the outcome stands)", job.id, _name(hooks.after_job)
            )
    return outcome


async def startup(hooks: Hooks | None, resources: dict[str, Any], executor: Executor, worker: str) -> None:
    """Run ``on_startup(resources)``; :class:`WorkerHookError` when it raises."""
    if hooks is None or hooks.on_startup is None:
        return
    try:
        await call_hook(hooks.on_startup, executor, resources)
    except Exception as exc:
        raise WorkerHookError(
            f"worker {worker}: on_startup hook {_name(hooks.on_startup)} failed: {type(exc).__name__}: {exc}"
        ) from exc


async def shutdown(hooks: Hooks | None, resources: dict[str, Any], executor: Executor, worker: str) -> None:
    """Run ``on_shutdown(resources)``; an error is logged."""
    if hooks is None or hooks.on_shutdown is None:
        return
    try:
        await call_hook(hooks.on_shutdown, executor, resources)
    except Exception:
        log.exception("worker %s: on_shutdown hook %s failed", worker, _name(hooks.on_shutdown))
