"""A worker's settings, typed and checked once: what ``Worker(...)``'s keywords and ``Settings`` decide."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .._keys import lifecycle_stream
from ..config import Settings
from ..exceptions import ConfigurationError
from ._hooks import HOOK_NAMES, Hooks, hooks_from, load_hooks

__all__ = ["ORPHAN_POLICIES", "WorkerSettings", "merge_hooks"]

ORPHAN_POLICIES = ("fail", "requeue")


def _default_name() -> str:
    return f"asyncsched-{socket.gethostname().split('.')[0]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """Everything a worker's parts read (see :class:`~asyncsched.worker.Worker` for each field).

    Build it with :meth:`resolve`, which fills what is not given from ``Settings``; :meth:`check` (run by
    ``Worker``) refuses a bad value with :class:`ConfigurationError` naming the field."""

    queues: tuple[str, ...]
    name: str
    prefix: str  # the Redis key prefix (``Settings.key_prefix``)
    concurrency: int
    threads: int
    burst: bool = False
    accept_pickle: bool = False
    allowed_functions: tuple[str, ...] | None = None
    heartbeat_interval: float = 10.0
    lease: int = 60
    orphan_policy: str = "fail"
    grace_period: float = 30.0
    batch_size: int = 50
    scheduler_interval: float = 1.0
    poll_timeout: float = 1.0
    reap_interval: float = 30.0
    job_timeout: int = 180
    max_result_bytes: int | None = None
    lifecycle_maxlen: int = 100_000

    @property
    def stream(self) -> str:
        """The lifecycle stream the worker's scripts append to."""
        return lifecycle_stream(self.prefix)

    @classmethod
    def resolve(
        cls,
        settings: Settings,
        queues: Iterable[str] | None = None,
        *,
        concurrency: int | None = None,
        threads: int | None = None,
        accept_pickle: bool | None = None,
        allowed_functions: Iterable[str] | None = None,
        name: str | None = None,
        lease: float = 60,
        **given: Any,
    ) -> WorkerSettings:
        """The settings of a worker built with ``Worker``'s keywords (``None``: from ``settings``)."""
        out = cls(
            queues=tuple(queues or settings.queues),
            name=name or _default_name(),
            prefix=settings.key_prefix,
            concurrency=concurrency or settings.concurrency,
            threads=threads or settings.threads,
            accept_pickle=settings.accept_pickle if accept_pickle is None else accept_pickle,
            allowed_functions=None if allowed_functions is None else tuple(allowed_functions),
            lease=int(lease),
            job_timeout=settings.job_timeout,
            max_result_bytes=settings.max_result_bytes,
            lifecycle_maxlen=settings.lifecycle_maxlen,
            **given,
        )
        return out

    def check(self) -> None:
        """Refuse settings a worker cannot run with (the message names the field)."""
        if not self.queues:
            raise ConfigurationError("a worker needs at least one queue")
        if self.orphan_policy not in ORPHAN_POLICIES:
            raise ConfigurationError(
                f"orphan_policy must be one of {ORPHAN_POLICIES}, got {self.orphan_policy!r}"
            )
        if self.lease <= self.heartbeat_interval:
            raise ConfigurationError(f"lease ({self.lease}s) must be longer than heartbeat_interval")


def merge_hooks(hooks: Hooks | str | object | None, *named: Callable[..., Any] | None) -> Hooks | None:
    """The worker's hooks from ``hooks=`` and/or the four hook arguments (``None``: no hooks at all)."""
    given = dict(zip(HOOK_NAMES, named, strict=True))
    given = {k: v for k, v in given.items() if v is not None}
    if hooks is None:
        return Hooks(**given) if given else None
    base = load_hooks(hooks) if isinstance(hooks, str) else hooks_from(hooks)
    if given:
        base = Hooks(**{name: given.get(name, getattr(base, name)) for name in HOOK_NAMES})
    return base
