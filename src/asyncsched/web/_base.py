"""What every API handler shares: the :class:`Services`, the function and retry rules, the schedule check,
reading one task, and lists and items shown for display (one bad row cannot fail a page).

:class:`HandlerBase` is the base of the operators' handlers (``_ops.py``) and of
:class:`~asyncsched.web._handlers.Handlers`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.requests import Request

from ..exceptions import (
    AsyncschedError,
    BrokenTask,
    FunctionNotAllowed,
    InvalidJob,
    Problem,
    TaskDefinitionError,
)
from ..queue._retry import retry_from_data
from ._security import API_SOURCE, check_function, function_allowed
from ._serialize import display_item
from ._services import Services
from ._validation import FieldError, ValidationFailed, error

if TYPE_CHECKING:
    from ..queue import Retry
    from ..store import Page, ScheduledTask

__all__ = ["HandlerBase", "one_view", "page_view", "prefix_of", "problems_to_errors"]

_SCHEDULE_FIELDS = frozenset({"type", "schedule", "timezone", "start", "align"})

log = logging.getLogger("asyncsched.web")


def problems_to_errors(exc: TaskDefinitionError, default_field: str | None) -> list[FieldError]:
    """Each :class:`~asyncsched.exceptions.Problem` as a field error under ``body``."""

    def loc(field: str | None) -> tuple[str, ...]:
        field = field or default_field
        return ("body", field) if field else ("body",)

    return [error(loc(p.field), p.message) for p in exc.problems] or [error(loc(None), str(exc))]


def page_view(
    page: Page[Any] | Sequence[Any], view: Callable[[Any], dict[str, Any]], params: dict[str, Any]
) -> dict[str, Any]:
    """``{"items", "total", "offset", "limit"}`` of a repository ``Page`` (already cut) or of a whole
    list (cut here); each item shown by :func:`display_item`, so one bad item cannot fail the page."""
    offset, limit = params["offset"], params["limit"]
    if isinstance(page, Sequence):
        total, items, capped = len(page), list(page)[offset : offset + limit], False
    else:
        total, items, capped = page.total, list(page.items), page.total_capped
    return {
        "items": [display_item(item, view) for item in items],
        "total": total,
        "total_capped": capped,
        "offset": offset,
        "limit": limit,
    }


_PASS_THROUGH: tuple[type[BaseException], ...] = (
    LookupError,  # 404
    AsyncschedError,  # mapped by the router
    OperationalError,  # 503: the database, not the row
    InterfaceError,
    OSError,
    TimeoutError,
)


async def one_view(load: Awaitable[Any], view: Callable[[Any], dict[str, Any]], key: str) -> dict[str, Any]:
    """One stored item for display: a row that cannot be loaded is answered degraded, like in lists."""
    try:
        row = await load
    except _PASS_THROUGH:
        raise
    except Exception as exc:
        line = (str(exc).splitlines() or [""])[0][:200]
        log.warning("cannot load %s: %s: %s", key, type(exc).__name__, line)
        return {"id": key, "degraded": f"row cannot be read: {type(exc).__name__}: {line}"}
    return display_item(row, view)


class HandlerBase:
    """The checks and reads the handlers share, bound to one :class:`Services`."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def _trusted_functions(self) -> set[str]:
        tasks = await self.services.tasks()
        functions: set[str] = await tasks.functions(exclude_source=API_SOURCE)
        return functions

    async def _check_function(self, function: str) -> None:
        """The one function rule (403 when not allowed, 422 naming ``function`` when it does not resolve)."""
        allow = self.services.settings.allowed_functions
        trusted = set() if allow and function_allowed(function, allow) else await self._trusted_functions()
        try:
            check_function(function, allow, trusted)
        except InvalidJob as exc:
            raise ValidationFailed([error(("body", "function"), str(exc))]) from None

    def _check_retry(self, body: dict[str, Any]) -> Retry | int | None:
        """The body's ``retry`` as a :class:`Retry` (422 naming ``retry``). Exception classes it names are
        resolved without importing a module the allow-list does not cover (an imported one resolves)."""
        if not body.get("retry") or isinstance(body["retry"], int):
            return body.get("retry") or None
        try:
            return retry_from_data(body["retry"], allow=self.services.settings.allowed_functions)
        except ValueError as exc:
            raise ValidationFailed([error(("body", "retry"), str(exc))]) from None

    def _validate_schedule(self, body: dict[str, Any]) -> list[FieldError]:
        """The problems of the schedule fields (``type``, ``schedule``, ``timezone``, ``start``, ``align``)
        as the one task definition words them (:func:`~asyncsched.scheduler._definition.validate_definition`,
        as for a task file and in Python), each on its field; the other fields are checked elsewhere."""
        from ..scheduler._definition import validate_definition  # the router imports no engine

        definition = {k: v for k, v in body.items() if k != "agent_name" and v is not None}
        _, problems = validate_definition(definition, check_import=False)
        return [error(("body", p.field), p.message) for p in problems if p.field in _SCHEDULE_FIELDS]

    async def _task(self, params: dict[str, Any]) -> ScheduledTask:
        scheduler = await self.services.scheduler()
        return await scheduler.get_task(params["task_id"], agent_name=params.get("agent_name"))

    async def _runnable(self, params: dict[str, Any]) -> ScheduledTask:
        """The task, if it can be enabled or run as stored: :class:`BrokenTask` (409 naming the field)
        when a column cannot be read, no longer validates, or its function is refused by the allow-list."""
        scheduler = await self.services.scheduler()
        task = await scheduler.checked_task(params["task_id"], agent_name=params.get("agent_name"))
        try:
            await self._check_function(task.function)
        except (FunctionNotAllowed, ValidationFailed) as exc:
            reason = str(exc.errors[0]["msg"]) if isinstance(exc, ValidationFailed) else str(exc)
            raise BrokenTask([Problem(reason, task=task.name, field="function")]) from None
        return task


def prefix_of(request: Request, suffix: str) -> str:
    """The prefix the API is served under, as the client sees it: from the request path when it ends with
    the operation's own path (``suffix``), so mounting and FastAPI's ``include_router`` both work; else the
    ASGI root path."""
    path = request.url.path
    if suffix != "/" and path.endswith(suffix):
        return path[: -len(suffix)].rstrip("/")
    if suffix == "/" and path.endswith("/"):
        return path.rstrip("/")
    return str(request.scope.get("root_path", "")).rstrip("/")
