"""The Starlette router: routes from the operation table, auth, validation, error mapping, CORS.

Auth is checked inside every endpoint (not by a middleware) so that no way of mounting or copying the
routes can bypass it. CORS is a Starlette ``CORSMiddleware`` wrapped around the router only when
``cors_origins`` is set, decided on the first request (the default router reads settings lazily).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import _metrics as process_metrics
from ..exceptions import (
    AsyncschedError,
    BackendUnavailable,
    BrokenTask,
    Conflict,
    DuplicateTask,
    FunctionNotAllowed,
    InvalidValue,
    RedisRefused,
    TaskDefinitionError,
    UnsupportedURL,
)
from ._base import prefix_of, problems_to_errors
from ._compat import RouterBase
from ._handlers import Handlers
from ._health import health
from ._metrics import CONTENT_TYPE, RequestCounter, render_metrics
from ._request import MAX_BODY, _BadLength, _TooLarge, field_loc, read_inputs
from ._security import host_ok, host_refusal, same_origin_ok, token_ok
from ._serialize import ApiJSON
from ._services import ComponentUnavailable, Services
from ._spec import OPERATIONS, SCHEMAS, Operation, openapi_document
from ._validation import ValidationFailed, error

__all__ = ["SchedulerRouter", "create_router"]

log = logging.getLogger("asyncsched.web")

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, asyncpg's refused connections
    TimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    OperationalError,
    InterfaceError,
)
"""Exceptions that mean a backend cannot be reached (answered 503, not 500)."""

_STATIC = ("asyncsched.web", "static")

Handler = Callable[[Request, dict[str, Any], Any], Awaitable[Any]]


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    return ApiJSON({"detail": detail}, status_code=status, headers=headers)


def _is_health(scope: Scope) -> bool:
    """Whether the request is for ``/health`` relative to where the router is mounted."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    return (path[len(root) :] if root and path.startswith(root) else path) == "/health"


def _json_error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class _JSONRoute(Route):
    """A ``Route`` whose 405 (method not allowed) answers JSON, like every other error of the API."""

    allow: list[str] | None = None
    """Every method served at this path (by this and sibling routes), for the ``Allow`` header."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allow = ", ".join(self.allow or sorted(self.methods))
            response = _json_error(405, f"method {scope['method']} not allowed here", {"allow": allow})
            await response(scope, receive, send)
            return
        await super().handle(scope, receive, send)


class SchedulerRouter(RouterBase):
    """The API and dashboard as a Starlette ``Router`` (an ASGI app; mount it at any prefix).

    With FastAPI installed it is also a FastAPI ``APIRouter`` (see ``_compat.py``), so
    ``app.include_router(scheduler_router, prefix=..., tags=...)`` works on the same object.
    """

    def __init__(self, services: Services | None = None) -> None:
        self.services = services if services is not None else Services()
        self.handlers = Handlers(self.services)
        self.requests = RequestCounter()
        process_metrics.enable_process_series()  # serves /metrics: observe event delivery lag
        routes: list[Route | Mount] = [_JSONRoute("/", self._index, methods=["GET"], name="index")]
        for op in OPERATIONS:
            route = _JSONRoute(op.path, self._endpoint(op), methods=[op.method], name=op.name)
            route.allow = sorted({o.method for o in OPERATIONS if o.path == op.path})
            routes.append(route)
        routes.append(Mount("/static", StaticFiles(packages=[_STATIC]), name="static"))
        super().__init__(routes=routes, default=self._not_found)
        self._cors_app: ASGIApp | None = None
        self._cors_checked = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            settings = self.services.settings
            conn = HTTPConnection(scope)
            if not host_ok(conn, settings.api_token, settings.allowed_hosts) and not _is_health(scope):
                await _json_error(400, host_refusal(conn))(scope, receive, send)
                return
            await self._serve(scope, receive, send)
            return
        await self._route(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one HTTP request; an ``HTTPException`` raised below (static files' 404, Starlette's own
        errors when mounted in an app) is answered as JSON when no answer has started."""
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._route(scope, receive, tracked)
        except HTTPException as exc:
            if started:
                raise
            await _json_error(exc.status_code, str(exc.detail), dict(exc.headers or {}))(scope, receive, send)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().not_found(scope, receive, send)
            return
        await _json_error(404, f"no such route: {scope.get('path', '')[:200]}")(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._cors_checked:
            origins = self.services.settings.cors_origins
            if origins:
                self._cors_app = CORSMiddleware(
                    super().__call__,
                    allow_origins=list(origins),
                    allow_methods=["GET", "POST", "PATCH", "DELETE"],
                    allow_headers=["authorization", "content-type", "last-event-id"],
                    max_age=600,
                )
            self._cors_checked = True
        if self._cors_app is not None and scope["type"] == "http":
            await self._cors_app(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    # -- plumbing ----------------------------------------------------------------------------------

    def _endpoint(self, op: Operation) -> Callable[[Request], Awaitable[Response]]:
        handler: Handler = getattr(self, f"_op_{op.name}", None) or getattr(self.handlers, op.name)
        body_schema = SCHEMAS[op.body] if op.body else None

        async def endpoint(request: Request) -> Response:
            response = await self._answer(op, handler, body_schema, request)
            self.requests.add(op.name, response.status_code)
            return response

        endpoint.__name__ = op.name
        endpoint.__doc__ = op.summary
        return endpoint

    async def _answer(
        self, op: Operation, handler: Handler, body_schema: dict[str, Any] | None, request: Request
    ) -> Response:
        refusal = self._refusal(op, request)
        if refusal is not None:
            return refusal
        try:
            params, body = await read_inputs(op, body_schema, request)
            result = await handler(request, params, body)
        except ValidationFailed as exc:
            return _detail(422, exc.errors)
        except InvalidValue as exc:  # from the queue or bus boundary: args, kwargs, payload
            return _detail(422, [error(field_loc(exc.field), exc.reason)])
        except _TooLarge:
            return _detail(413, f"request body larger than {MAX_BODY} bytes")
        except _BadLength:
            return _detail(400, "invalid Content-Length header")
        except FunctionNotAllowed as exc:
            return _detail(403, str(exc))
        except DuplicateTask as exc:
            return _detail(409, str(exc))
        except Conflict as exc:
            return _detail(409, str(exc))
        except BrokenTask as exc:  # the stored task, not the request: 409 naming each field
            return _detail(409, str(exc))
        except TaskDefinitionError as exc:
            return _detail(422, problems_to_errors(exc, None))
        except LookupError as exc:
            if not isinstance(exc, AsyncschedError):  # a KeyError of ours is a bug, not a 404
                log.exception("%s %s failed", request.method, request.url.path)
                return _detail(500, "internal error (see the server log)")
            return _detail(404, str(exc) or "not found")  # our own message, quotes and all
        except (BackendUnavailable, ComponentUnavailable, UnsupportedURL, RedisRefused) as exc:
            log.warning("%s %s: unavailable: %s", request.method, request.url.path, exc)
            return _detail(503, str(exc))
        except _UNAVAILABLE as exc:
            first = (str(exc).splitlines() or [""])[0][:200]
            log.warning("%s %s: backend unavailable: %s", request.method, request.url.path, first)
            return _detail(503, f"backend unavailable: {type(exc).__name__}: {first}")
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            return _detail(500, "internal error (see the server log)")
        if isinstance(result, Response):
            return result
        return ApiJSON(result, status_code=op.status)

    def _refusal(self, op: Operation, request: Request) -> Response | None:
        """The answer refusing the request before its inputs are read, if any (Host, token, origin)."""
        settings = self.services.settings
        # Checked here too for routes copied elsewhere (FastAPI's include_router). /health answers any host
        # (orchestrators probe by IP), with details only for a host that may see them.
        if op.name != "health" and not host_ok(request, settings.api_token, settings.allowed_hosts):
            return _detail(400, host_refusal(request))
        if op.auth and not token_ok(request, settings.api_token):
            return _detail(401, "missing or invalid bearer token", {"www-authenticate": "Bearer"})
        if op.method in ("POST", "PATCH", "DELETE") and not same_origin_ok(request, settings.cors_origins):
            return _detail(403, "cross-origin request refused (add the origin to ASYNCSCHED_CORS_ORIGINS)")
        return None

    # -- operations served here (not data handlers) ------------------------------------------------

    async def _index(self, request: Request) -> Response:
        base = prefix_of(request, "/")
        return JSONResponse(
            {
                "name": "asyncsched",
                "dashboard": f"{base}/dashboard",
                "openapi": f"{base}/openapi.json",
                "health": f"{base}/health",
            }
        )

    async def _op_openapi(self, request: Request, params: dict[str, Any], body: Any) -> Response:
        root = prefix_of(request, "/openapi.json")
        return JSONResponse(openapi_document(root, secured=bool(self.services.settings.api_token)))

    async def _op_dashboard(self, request: Request, params: dict[str, Any], body: Any) -> Response:
        from ._dashboard import render_dashboard

        root = prefix_of(request, "/dashboard")
        return HTMLResponse(render_dashboard(root, token_required=bool(self.services.settings.api_token)))

    async def _op_metrics(self, request: Request, params: dict[str, Any], body: Any) -> Response:
        text = await render_metrics(self.services, self.requests)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    async def _op_health(self, request: Request, params: dict[str, Any], body: Any) -> Response:
        return await health(self.services, request)


def create_router(services: Services | None = None) -> SchedulerRouter:
    """A new router bound to ``services`` (built lazily from the process settings when ``None``)."""
    return SchedulerRouter(services)
