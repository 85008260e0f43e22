"""Retry policies: RQ's fixed waits, exponential backoff with a cap and full jitter, and retrying only
on chosen exception types (see :class:`Retry`)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

__all__ = [
    "Retry",
    "backoff_wait",
    "check_exception",
    "exception_name",
    "retry_from_data",
    "retry_matches",
    "retry_to_data",
]


class Retry:
    """Retry a failing job up to ``max`` more times (like ``rq.Retry``).

    * Fixed waits (RQ's): ``interval`` seconds, or a list where the n-th retry waits the n-th value (RQ's
      rule: with fewer intervals than retries, the first values are reused).
    * Exponential backoff: ``backoff="exponential"`` waits ``min(cap, base * 2 ** (n - 1))`` seconds
      before the n-th retry; ``jitter=True`` draws the wait uniformly from 0 to that ("full jitter").
      The wait is computed by the worker when the attempt fails; the job hash also carries the capped
      waits without jitter as RQ's ``retry_intervals``, so a stock RQ worker backs off the same way.
    * ``on``: retry only when the exception is an instance of one of these classes (or of a class named
      ``module.QualName``, e.g. ``"httpx.HTTPError"``; builtins by their bare name). Others fail at once.
      Matched by name along the exception's class hierarchy: the worker imports nothing to decide.
      (A stock RQ worker ignores ``on`` and ``jitter``.)
    """

    def __init__(
        self,
        max: int,
        interval: int | list[int] = 0,
        *,
        backoff: str | None = None,
        base: float = 1.0,
        cap: float = 300.0,
        jitter: bool = False,
        on: type[BaseException] | str | Iterable[type[BaseException] | str] = (),
    ) -> None:
        count: object = max
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"Retry(max=...) must be an integer of at least 1, got {max!r}")
        intervals = [interval] if isinstance(interval, int) else list(interval)
        if not intervals or any(not isinstance(i, int) or i < 0 for i in map(_obj, intervals)):
            raise ValueError(f"retry intervals must be non-negative integers, got {interval!r}")
        if backoff not in BACKOFFS:
            raise ValueError(
                f"Retry(backoff=...) must be one of {sorted(b for b in BACKOFFS if b)}, got {backoff!r}"
            )
        if backoff == "exponential":
            if not 0 < base <= MAX_BACKOFF or not 0 < cap <= MAX_BACKOFF:
                raise ValueError(
                    f"Retry base and cap must be seconds in (0, {MAX_BACKOFF}], got {base!r}, {cap!r}"
                )
            if interval != 0:
                raise ValueError("Retry: give either interval=... or backoff='exponential', not both")
            intervals = [max_wait(base, cap, n) for n in range(1, max + 1)]
        elif jitter:
            raise ValueError("Retry(jitter=True) needs backoff='exponential'")
        self.max = max
        self.intervals = intervals
        self.backoff = backoff or None
        self.base = float(base)
        self.cap = float(cap)
        self.jitter = bool(jitter)
        self.on = exception_names(on)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Retry:
        """From the form of tasks.yaml and the API: ``{max, interval}`` or ``{max, backoff, base, cap,
        jitter, on}`` (``on``: a list of exception class names)."""
        return cls(
            data["max"],
            data.get("interval", 0),
            backoff=data.get("backoff"),
            base=data.get("base", 1.0),
            cap=data.get("cap", 300.0),
            jitter=data.get("jitter", False),
            on=data.get("on") or (),
        )

    def policy(self) -> str:
        """The ``asyncsched_retry`` hash field (JSON) the worker reads at failure time; ``""`` when RQ's
        ``retries_left``/``retry_intervals`` say it all."""
        if self.backoff is None and not self.on:
            return ""
        data: dict[str, Any] = {"max": self.max}
        if self.backoff is not None:
            data.update(backoff=self.backoff, base=self.base, cap=self.cap, jitter=self.jitter)
        if self.on:
            data["on"] = list(self.on)
        return json.dumps(data, separators=(",", ":"))

    def key(self) -> tuple[Any, ...]:
        """A hashable summary (the enqueue path caches script headers by options)."""
        return (self.max, tuple(self.intervals), self.policy())

    def __repr__(self) -> str:
        if self.backoff is None:
            extra = f", on={list(self.on)}" if self.on else ""
            return f"Retry(max={self.max}, interval={self.intervals}{extra})"
        return (
            f"Retry(max={self.max}, backoff={self.backoff!r}, base={self.base:g}, cap={self.cap:g}, "
            f"jitter={self.jitter}, on={list(self.on)})"
        )


def _obj(value: object) -> object:
    return value


BACKOFFS = (None, "", "fixed", "exponential")
MAX_BACKOFF = 7 * 86_400
"""Longest base or cap of an exponential backoff (seconds)."""
_EXC_NAME = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def max_wait(base: float, cap: float, n: int) -> int:
    """RQ's ``retry_intervals`` value for the n-th retry of an exponential backoff: whole seconds."""
    return round(min(cap, base * 2.0 ** min(n - 1, 64)))


def exception_name(cls: type[BaseException] | str) -> str:
    """``module.QualName`` of an exception class (a name given as text is checked, builtins made full)."""
    if isinstance(cls, str):
        if not _EXC_NAME.match(cls) or len(cls) > 300 or "__" in cls:
            raise ValueError(f"Retry(on=...): {cls!r} is not an exception class name like 'httpx.HTTPError'")
        return cls if "." in cls else f"builtins.{cls}"
    given: object = cls
    if isinstance(given, type) and issubclass(given, BaseException):
        return f"{cls.__module__}.{cls.__qualname__}"
    raise ValueError(f"Retry(on=...) takes exception classes or their names, got {cls!r}")


def exception_names(on: type[BaseException] | str | Iterable[type[BaseException] | str]) -> tuple[str, ...]:
    """:func:`exception_name` of one class or of each of several."""
    items = [on] if isinstance(on, str | type) else list(on)
    return tuple(dict.fromkeys(exception_name(c) for c in items))


def retry_matches(names: Iterable[str], exc: BaseException | None) -> bool:
    """Whether ``exc`` is an instance of a class named in ``names`` (compared along its class hierarchy)."""
    if exc is None:
        return False
    wanted = set(names)
    return any(f"{c.__module__}.{c.__qualname__}" in wanted for c in type(exc).__mro__)


def backoff_wait(policy: Mapping[str, Any], n: int, rng: Callable[[float, float], float]) -> float:
    """Seconds to wait before the n-th retry under an exponential ``policy`` (``rng``: random.uniform)."""
    ceiling = min(float(policy["cap"]), float(policy["base"]) * 2.0 ** min(n - 1, 64))
    return rng(0.0, ceiling) if policy.get("jitter") else ceiling


RETRY_KEYS = frozenset({"max", "interval", "backoff", "base", "cap", "jitter", "on"})
MAX_RETRIES = 100
MAX_INTERVAL = 7 * 86_400


def check_exception(name: str, *, allow: Iterable[str] | None = None) -> str | None:
    """``None`` if ``name`` resolves, by the function-reference rule (``_functions``), to an exception class
    defined where it is named; else what is wrong. A module not yet imported is imported only when ``allow``
    (an allow-list, ``None``: any) covers the name; resolving an already imported module imports nothing."""
    import sys

    from ..exceptions import FunctionNotAllowed, InvalidJob
    from ._functions import import_function

    try:
        full = exception_name(name)
        module = full.rsplit(".", 1)[0]
        obj = import_function(full, allow=None if module in sys.modules else allow)
    except (InvalidJob, FunctionNotAllowed, ValueError) as exc:
        return f"exception class {name!r}: {exc}"
    if not (isinstance(obj, type) and issubclass(obj, BaseException)):
        return f"{name!r} is not an exception class"
    return None


def retry_from_data(data: object, *, check_import: bool = True, allow: Iterable[str] | None = None) -> Retry:
    """The :class:`Retry` of a tasks.yaml / API value: a count, or a mapping of :data:`RETRY_KEYS`.
    ``ValueError`` says what is wrong; with ``check_import`` the ``on`` names must resolve to exception
    classes (:func:`check_exception`)."""

    def whole(n: object, low: int, high: int) -> TypeGuard[int]:
        return isinstance(n, int) and not isinstance(n, bool) and low <= n <= high

    def seconds(n: Any) -> bool:
        return isinstance(n, int | float) and not isinstance(n, bool) and 0 < n <= MAX_INTERVAL

    if whole(data, 1, MAX_RETRIES):
        return Retry(data)
    if isinstance(data, Mapping) and True in data:  # YAML 1.1 reads an unquoted key `on:` as true
        data = {("on" if k is True else k): v for k, v in data.items()}
    if not isinstance(data, Mapping) or not set(data) <= RETRY_KEYS or "max" not in data:
        raise ValueError(
            f"must be a count from 1 to {MAX_RETRIES} or a mapping with 'max' and some of "
            f"{sorted(RETRY_KEYS - {'max'})}, got {data!r:.100}"
        )
    if not whole(data["max"], 1, MAX_RETRIES):
        raise ValueError(f"max must be a count from 1 to {MAX_RETRIES}, got {data['max']!r:.50}")
    interval = data.get("interval", 0)
    if not (
        whole(interval, 0, MAX_INTERVAL)
        or (
            isinstance(interval, list)
            and 0 < len(interval) <= MAX_RETRIES
            and all(whole(i, 0, MAX_INTERVAL) for i in interval)
        )
    ):
        raise ValueError(f"interval must be seconds from 0 to {MAX_INTERVAL} or a list of them")
    for key in ("base", "cap"):
        if key in data and not seconds(data[key]):
            raise ValueError(
                f"{key} must be seconds above 0 and at most {MAX_INTERVAL}, got {data[key]!r:.50}"
            )
    if "jitter" in data and not isinstance(data["jitter"], bool):
        raise ValueError(f"jitter must be true or false, got {data['jitter']!r:.50}")
    on = data.get("on") or []
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list) or len(on) > 20 or not all(isinstance(n, str) for n in on):
        raise ValueError("on must be a list of at most 20 exception class names like 'httpx.HTTPError'")
    retry = Retry.from_dict({**data, "on": on})
    for name in on if check_import else ():
        problem = check_exception(name, allow=allow)
        if problem:
            raise ValueError(f"on: {problem}")
    return retry


def retry_to_data(retry: Retry) -> dict[str, Any]:
    """The mapping :func:`retry_from_data` reads back (stored in a task's options)."""
    if retry.backoff is None:
        out: dict[str, Any] = {"max": retry.max, "interval": retry.intervals}
    else:
        out = {"max": retry.max, "backoff": retry.backoff, "base": retry.base, "cap": retry.cap}
        out["jitter"] = retry.jitter
    if retry.on:
        out["on"] = list(retry.on)
    return out
