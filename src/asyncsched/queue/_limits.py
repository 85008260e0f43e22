"""Flow limits: rate limits and concurrency caps shared by every worker on one Redis.

A job carries its limits in its hash (``asyncsched_limits``: one line ``key\\tmax\\trate\\tperiod`` per
key); the worker's claim script checks them atomically when it takes the job (``rq/scripts/lib_limits.lua``)
and parks a job over a limit until it has room. This module turns what the user writes (enqueue arguments,
a queue's or a function's :class:`Limit` policy, tasks.yaml, the API) into that field, refusing bad input
with the name of the field. See docs/flow-control.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .._keys import limit_key, limit_keys
from ..exceptions import InvalidJob
from ..rq.keys import RQKeys

__all__ = [
    "Limit",
    "LimitSpec",
    "LimitUsage",
    "limits_field",
    "limits_usage",
    "parse_limits_field",
    "parse_rate",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(
    r"(?:(?P<key>.+):)?(?P<n>[0-9]{1,7})/(?P<num>[0-9]{1,6}(?:\.[0-9]{1,6})?)?(?P<unit>ms|s|m|h|d)\Z"
)
_KEY = re.compile(r"[^\x00-\x1f\x7f{}]{1,200}\Z")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
MAX_PERIOD = 7 * 86400.0


@dataclass(frozen=True)
class LimitSpec:
    """One limit key as stored: a concurrency cap (``max``) and/or a rate (``rate`` per ``period`` s)."""

    key: str
    """The limit key as stored (``{field}`` placeholders filled from the job's arguments)."""
    max: int | None = None
    """Most jobs of this key running at once."""
    rate: int | None = None
    """Most jobs of this key started per ``period`` seconds."""
    period: float | None = None

    def line(self) -> str:
        period = "" if self.period is None else repr(self.period)
        return f"{self.key}\t{self.max or ''}\t{self.rate or ''}\t{period}"


@dataclass(frozen=True)
class Limit:
    """A flow-limit policy for a queue or a function (``TaskQueue(limits=...)``): ``rate`` is ``"N/unit"``
    (unit ``ms``, ``s``, ``m``, ``h``, ``d``, optionally with a count: ``"5/10s"``), prefixed with its own
    key (``"openai:60/m"``) to share it with other queues or functions; ``max_concurrency`` caps the jobs
    running at once, per ``concurrency_key`` (a template of the job's keyword arguments, e.g.
    ``"tenant:{tenant_id}"``) when given."""

    rate: str | None = None
    max_concurrency: int | None = None
    concurrency_key: str | None = None

    def __post_init__(self) -> None:
        if self.rate is None and self.max_concurrency is None:
            raise ValueError("Limit needs a rate or a max_concurrency")
        if self.rate is not None:
            parse_rate(self.rate, "rate")
        _check_max(self.max_concurrency, "max_concurrency")
        if self.concurrency_key is not None:
            if self.max_concurrency is None:
                raise ValueError("Limit: concurrency_key needs max_concurrency")
            _check_key(_FIELD.sub("x", self.concurrency_key), "concurrency_key")


def parse_rate(text: object, field: str = "rate_limit") -> tuple[str | None, int, float]:
    """``"[key:]N/[count]unit"`` -> (key or None, N, period in seconds); ValueError naming ``field``."""
    m = _RATE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            f"{field} must look like '60/m', '20/s', '5/10s' or 'key:60/m' (units ms, s, m, h, d), "
            f"got {text!r}"
        )
    n = int(m["n"])
    period = float(m["num"] or 1) * _UNITS[m["unit"]]
    if n < 1 or not 0.001 <= period <= MAX_PERIOD:
        raise ValueError(f"{field}: the count must be >= 1 and the period 1 ms to 7 days, got {text!r}")
    key = m["key"]
    if key is not None:
        _check_key(key, field)
    return key, n, period


def _check_max(value: Any, field: str) -> None:
    if value is not None and (type(value) is not int or not 1 <= value <= 1_000_000):
        raise ValueError(f"{field} must be an integer from 1 to 1000000, got {value!r}")


def _check_key(key: str, field: str) -> None:
    if not _KEY.match(key):
        raise ValueError(
            f"{field}: a limit key is 1-200 characters without control characters or braces, got {key!r}"
        )


def _render(template: str, kwargs: Mapping[str, Any], field: str) -> str:
    """``template`` with each ``{name}`` replaced by the job's keyword argument ``name`` (nothing else is
    interpreted: no attribute or index access)."""

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in kwargs:
            raise InvalidJob(
                f"{field} {template!r} names {name!r}, which is not a keyword argument of the job"
            )
        return str(kwargs[name])

    key = _FIELD.sub(value, template)
    try:
        _check_key(key, field)
    except ValueError as exc:
        raise InvalidJob(str(exc)) from None
    return key


def _add(found: dict[str, LimitSpec], spec: LimitSpec) -> None:
    """Merge ``spec`` into ``found`` (a key may have a cap and a rate; the first setting of each wins)."""
    old = found.get(spec.key)
    if old is None:
        found[spec.key] = spec
        return
    rate, period = (old.rate, old.period) if old.rate is not None else (spec.rate, spec.period)
    found[spec.key] = LimitSpec(spec.key, old.max if old.max is not None else spec.max, rate, period)


def _policy(
    found: dict[str, LimitSpec],
    limit: Limit,
    default_key: str,
    kwargs: Mapping[str, Any],
    names: tuple[str, str] = ("rate", "concurrency_key"),
) -> None:
    if limit.rate is not None:
        key, n, period = parse_rate(limit.rate, names[0])
        _add(found, LimitSpec(key or default_key, rate=n, period=period))
    if limit.max_concurrency is not None:
        key = default_key
        if limit.concurrency_key is not None:
            key = _render(limit.concurrency_key, kwargs, names[1])
        _add(found, LimitSpec(key, max=limit.max_concurrency))


def limits_field(
    *,
    path: str,
    queue: str,
    kwargs: Mapping[str, Any],
    rate_limit: str | None,
    concurrency_key: str | None,
    max_concurrency: int | None,
    policies: Mapping[str, Limit],
) -> str | None:
    """The ``asyncsched_limits`` text of one job, or ``None`` for a job without limits (the common case
    costs two dict lookups). The job's own arguments come first, then its function's policy
    (``"function:<path>"``), then its queue's (``"queue:<name>"``)."""
    if rate_limit is None and max_concurrency is None and concurrency_key is None and not policies:
        return None
    found: dict[str, LimitSpec] = {}
    own_key = f"function:{path}"
    try:
        if rate_limit is not None:
            parse_rate(rate_limit, "rate_limit")
        _check_max(max_concurrency, "max_concurrency")
        if concurrency_key is not None and max_concurrency is None:
            raise ValueError("concurrency_key needs max_concurrency")
    except ValueError as exc:
        raise InvalidJob(str(exc)) from None
    if rate_limit is not None or max_concurrency is not None:
        own = Limit.__new__(Limit)  # validated above, under the enqueue arguments' names
        object.__setattr__(own, "rate", rate_limit)
        object.__setattr__(own, "max_concurrency", max_concurrency)
        object.__setattr__(own, "concurrency_key", concurrency_key)
        _policy(found, own, own_key, kwargs, ("rate_limit", "concurrency_key"))
    for name, default_key in ((f"function:{path}", own_key), (f"queue:{queue}", f"queue:{queue}")):
        policy = policies.get(name)
        if policy is not None:
            _policy(found, policy, default_key, kwargs)
    if not found:
        return None
    return "\n".join(spec.line() for spec in found.values())


def parse_limits_field(text: str) -> list[LimitSpec]:
    """The limits stored in a job hash (for display)."""
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 4:
            key, mx, rate, period = parts
            out.append(
                LimitSpec(
                    key,
                    int(mx) if mx else None,
                    int(rate) if rate else None,
                    float(period) if period else None,
                )
            )
    return out


def check_policies(limits: Mapping[str, Limit] | None) -> dict[str, Limit]:
    """``TaskQueue(limits=...)``: keys ``"queue:<name>"`` or ``"function:<module:qualname>"``."""
    out: dict[str, Limit] = {}
    for name, limit in (limits or {}).items():
        if not str(name).startswith(("queue:", "function:")):
            raise ValueError(f"limits: keys are 'queue:<name>' or 'function:<module:qualname>', got {name!r}")
        if not isinstance(limit, Limit):
            raise ValueError(f"limits[{name!r}] must be asyncsched.queue.Limit, got {type(limit).__name__}")
        out[name] = limit
    return out


@dataclass(frozen=True)
class LimitUsage:
    """A limit key in use and where it stands now: ``running`` jobs holding a slot, ``started`` in the
    current rate window, ``waiting`` parked jobs. ``kind`` is ``asyncsched`` (a flow limit) or ``rq`` (RQ 3's
    ``RateLimit``: ``max_concurrency`` is its concurrency, ``running`` its queued-or-running holders)."""

    key: str
    kind: str
    max_concurrency: int | None
    rate: int | None
    period: float | None
    running: int
    started: int
    waiting: int

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return asdict(self)


def _int(raw: Any) -> int | None:
    return int(raw) if raw not in (None, b"", "") else None


async def limits_usage(redis: Any, prefix: str) -> list[LimitUsage]:
    """Every limit key in use on this Redis (ours and RQ 3's), sorted by kind and key; two round trips."""
    rq = RQKeys(prefix)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(limit_keys(prefix))
        pipe.smembers(rq.rate_limit_keys)
        ours, rqs = await pipe.execute()
    keys = [("asyncsched", k.decode(errors="replace")) for k in ours]
    keys += [("rq", k.decode(errors="replace")) for k in rqs]
    keys.sort()
    if not keys:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for kind, key in keys:
            if kind == "rq":
                pipe.hmget(rq.rate_limit(key), ["concurrency"])
                pipe.zcard(rq.rate_limit(key, "allowed"))
                pipe.exists(rq.rate_limit(key))  # no rate window: a placeholder
                pipe.zcard(rq.rate_limit(key, "rate_limited"))
            else:
                pipe.hmget(limit_key(prefix, key), ["max", "rate", "period"])
                for part in ("active", "starts", "waiting"):
                    pipe.zcard(limit_key(prefix, key, part))
        replies = await pipe.execute()
    out = []
    for i, (kind, key) in enumerate(keys):
        conf, running, started, waiting = replies[4 * i : 4 * i + 4]
        if kind == "rq":
            out.append(LimitUsage(key, kind, _int(conf[0]), None, None, running, 0, waiting))
            continue
        period = float(conf[2]) if conf[2] else None
        out.append(LimitUsage(key, kind, _int(conf[0]), _int(conf[1]), period, running, started, waiting))
    return out
