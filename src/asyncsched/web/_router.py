"""The Starlette router: routes from the operation table, auth, validation, error mapping, CORS.

Auth is checked inside every endpoint (not by a middleware) so that no way of mounting or copying the
routes can bypass it. CORS is a Starlette ``CORSMiddleware`` wrapped around the router only when
``cors_origins`` is set, decided on the first request (the default router reads settings lazily).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..exceptions import (
    AsyncschedError,
    BackendUnavailable,
    DuplicateTask,
    FunctionNotAllowed,
    RedisRefused,
    TaskDefinitionError,
    UnsupportedURL,
)
from ._handlers import Conflict, Handlers, prefix_of, problems_to_errors
from ._metrics import CONTENT_TYPE, RequestCounter, render_metrics
from ._security import same_origin_ok, token_ok
from ._serialize import ApiJSON
from ._services import ComponentUnavailable, Services
from ._spec import OPERATIONS, SCHEMAS, Operation, openapi_document
from ._validation import ValidationFailed, coerce_query, error, validate

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

MAX_BODY = 1_048_576
"""Largest request body accepted (bytes); larger ones get 413."""

_STATIC = ("asyncsched.web", "static")

Handler = Callable[[Request, dict[str, Any], Any], Awaitable[Any]]


def _detail(status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    return ApiJSON({"detail": detail}, status_code=status, headers=headers)


async def _read_json(request: Request) -> Any:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ValidationFailed([error(("body",), "a JSON body is required", "missing")])
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed([error(("body",), f"invalid JSON: {exc}", "json_invalid")]) from None


class _TooLarge(Exception):
    pass


class SchedulerRouter(Router):
    """The API and dashboard as a Starlette ``Router`` (an ASGI app; mount it at any prefix)."""

    def __init__(self, services: Services | None = None) -> None:
        self.services = services if services is not None else Services()
        self.handlers = Handlers(self.services)
        self.requests = RequestCounter()
        routes: list[Route | Mount] = [Route("/", self._index, methods=["GET"], name="index")]
        routes.extend(
            Route(op.path, self._endpoint(op), methods=[op.method], name=op.name) for op in OPERATIONS
        )
        routes.append(Mount("/static", StaticFiles(packages=[_STATIC]), name="static"))
        super().__init__(routes=routes)
        self._cors_app: ASGIApp | None = None
        self._cors_checked = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not self._cors_checked:
            origins = self.services.settings.cors_origins
            if origins:
                self._cors_app = CORSMiddleware(
                    super().__call__,
                    allow_origins=list(origins),
                    allow_methods=["GET", "POST", "DELETE"],
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
        settings = self.services.settings
        if op.auth and not token_ok(request, settings.api_token):
            return _detail(401, "missing or invalid bearer token", {"www-authenticate": "Bearer"})
        if op.method in ("POST", "DELETE") and not same_origin_ok(request, settings.cors_origins):
            return _detail(403, "cross-origin request refused (add the origin to ASYNCSCHED_CORS_ORIGINS)")
        try:
            params = coerce_query(request.query_params, op.params, request.path_params)
            body: Any = None
            if body_schema is not None:
                body = await _read_json(request)
                problems = validate(body, body_schema)
                if problems:
                    raise ValidationFailed(problems)
            result = await handler(request, params, body)
        except ValidationFailed as exc:
            return _detail(422, exc.errors)
        except _TooLarge:
            return _detail(413, f"request body larger than {MAX_BODY} bytes")
        except FunctionNotAllowed as exc:
            return _detail(403, str(exc))
        except DuplicateTask as exc:
            return _detail(409, str(exc))
        except Conflict as exc:
            return _detail(409, str(exc))
        except TaskDefinitionError as exc:
            return _detail(422, problems_to_errors(exc, None))
        except LookupError as exc:
            if not isinstance(exc, AsyncschedError):  # a KeyError of ours is a bug, not a 404
                log.exception("%s %s failed", request.method, request.url.path)
                return _detail(500, "internal error (see the server log)")
            return _detail(404, str(exc).strip("'\"") or "not found")
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
        from sqlalchemy import text

        detail = token_ok(request, self.services.settings.api_token)
        report: dict[str, str] = {}

        async def redis_check() -> None:
            client = await self.services.redis()
            await client.ping()

        async def db_check() -> None:
            db = await self.services.db()
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        for name, check in (("redis", redis_check), ("database", db_check)):
            try:
                await asyncio.wait_for(check(), 5.0)
                report[name] = "ok"
            except Exception as exc:
                report[name] = f"unavailable: {type(exc).__name__}: {exc}" if detail else "unavailable"
        ok = all(v == "ok" for v in report.values())
        return ApiJSON({"status": "ok" if ok else "unavailable", **report}, status_code=200 if ok else 503)


def create_router(services: Services | None = None) -> SchedulerRouter:
    """A new router bound to ``services`` (built lazily from the process settings when ``None``)."""
    return SchedulerRouter(services)
