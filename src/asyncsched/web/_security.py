"""Bearer-token check and the function allow-list (see ``docs/security.md``).

The token is compared in constant time and never logged or echoed. The allow-list decides which functions
the API may schedule or enqueue: an entry is a module prefix (``app.services`` allows
``app.services:f`` and ``app.services.email:g``, not ``app.servicesx:h``) or one exact function
(``app.tasks:send``), judged by :func:`asyncsched.queue._functions.function_allowed` on the text and
again on the resolved function's real module and name. ``*`` allows every function defined in its module,
which is arbitrary code execution for anyone holding the token; it must be chosen explicitly.

With no allow-list configured the API may only use functions that trusted configuration already
schedules: a task loaded from a ``tasks.yaml`` file or registered from Python code (any task whose
``source`` is not ``"api"``).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from starlette.requests import HTTPConnection

from ..exceptions import FunctionNotAllowed
from ..queue._functions import function_allowed, parse_reference, resolve_function

__all__ = ["API_SOURCE", "check_function", "function_allowed", "same_origin_ok", "token_ok"]

API_SOURCE = "api"
"""``ScheduledTask.source`` of tasks created through the API (never trusted for the allow-list)."""


def token_ok(conn: HTTPConnection, token: str | None) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (always true when no token is set)."""
    if not token:
        return True
    header = conn.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def same_origin_ok(conn: HTTPConnection, allowed_origins: Iterable[str]) -> bool:
    """Whether a state-changing request may proceed: no ``Origin`` header (not a browser, or same-origin
    navigation), the page's own origin, or a configured CORS origin. Stops cross-site form posts."""
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    if origin in set(allowed_origins):
        return True
    host = conn.headers.get("host", "")
    return origin.partition("://")[2].rstrip("/") == host


def check_function(function: str, allow_list: Iterable[str], trusted: Iterable[str]) -> None:
    """Resolve ``function`` for the API: allow-listed, or one that trusted configuration already uses.

    ``trusted`` holds the functions of tasks defined by configuration (YAML files, Python code). Raises
    :class:`FunctionNotAllowed` before anything is imported when neither covers the text, then resolves it
    by the one rule of :func:`asyncsched.queue._functions.resolve_function` (:class:`InvalidJob` when it is
    not a function defined in the module it names).
    """
    ref = parse_reference(function)
    allow = tuple(allow_list)
    if allow and function_allowed(ref, allow):
        resolve_function(ref, allow=allow)
        return
    if str(ref) in set(trusted):
        resolve_function(ref)
        return
    if allow:
        raise FunctionNotAllowed(
            f"function {function!r} is not on the API allow-list (ASYNCSCHED_ALLOWED_FUNCTIONS)"
        )
    raise FunctionNotAllowed(
        f"function {function!r} is not used by any configured task and no allow-list is set; "
        "set ASYNCSCHED_ALLOWED_FUNCTIONS to the modules the API may run"
    )
