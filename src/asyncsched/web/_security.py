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

DNS rebinding: with no token, a page on ``attacker.example`` whose name later resolves to 127.0.0.1 could
drive an API listening on loopback from the operator's browser. Its requests carry ``Host:
attacker.example``, so without a token only loopback host names (and ``ASYNCSCHED_ALLOWED_HOSTS``) are
served (:func:`host_ok`).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable

from starlette.requests import HTTPConnection

from ..exceptions import FunctionNotAllowed
from ..queue._functions import function_allowed, parse_reference, resolve_function

__all__ = [
    "API_SOURCE",
    "LOOPBACK_HOSTS",
    "check_function",
    "function_allowed",
    "host_ok",
    "host_refusal",
    "request_host",
    "same_origin_ok",
    "token_ok",
]

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


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "testserver")
"""Host names served without a token by default: loopback names and literals (any ``127.x.y.z``, any
``*.localhost``, which browsers resolve to loopback themselves), and ``testserver``, the fixed name of
Starlette's in-process ``TestClient`` (a single-label name no attacker can register in public DNS)."""


def request_host(conn: HTTPConnection) -> str:
    """The ``Host`` header's name, lower-case, without port or IPv6 brackets (empty if absent)."""
    host = conn.headers.get("host", "").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_ok(conn: HTTPConnection, token: str | None, allowed_hosts: Iterable[str]) -> bool:
    """Whether the request's ``Host`` may be served: always with a token configured (the token is the
    defence); otherwise a loopback name, or one of ``allowed_hosts`` (``*`` allows any)."""
    if token:
        return True
    host = request_host(conn)
    if not host or _loopback(host):  # no Host at all: not a browser (browsers always send it)
        return True
    allowed = {h.strip().lower().strip("[]") for h in allowed_hosts}
    return "*" in allowed or host in allowed


def host_refusal(conn: HTTPConnection) -> str:
    """The 400 answer's ``detail`` for a refused ``Host``."""
    host = request_host(conn)[:100] or "(none)"
    return (
        f"host {host!r} is not served without a token (DNS rebinding protection): add it to "
        "ASYNCSCHED_ALLOWED_HOSTS or set ASYNCSCHED_API_TOKEN"
    )


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
