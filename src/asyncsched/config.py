"""Settings: one object, read from the environment, overridable by CLI flags and constructor arguments.

Every public component takes an optional ``settings`` (and usually a more specific override such as a URL
or a client). With none given it uses :func:`get_settings`, which reads the environment once.

=============================  ==============================  ==========================================
Environment variable           Default                         Meaning
=============================  ==============================  ==========================================
``REDIS_URL``                  ``memory://``                   Redis: ``memory://`` (in-process),
                                                               ``redis://``, ``rediss://``, ``unix://``,
                                                               ``redis+sentinel://host:port/service``
``DATABASE_URL``               ``sqlite+aiosqlite:///./asyncsched.db``
                                                               SQL history and schedules
``ASYNCSCHED_KEY_PREFIX``      ``rq`` (or ``RQ_KEY_PREFIX``)   Prefix of every Redis key (RQ 3's prefix)
``ASYNCSCHED_QUEUES``          ``default``                     Comma-separated queues a worker listens to
``ASYNCSCHED_SERIALIZER``      ``json``                        Serializer of jobs we create: json|pickle
``ASYNCSCHED_ACCEPT_PICKLE``   ``false``                       Workers run pickled (RQ default) jobs
``ASYNCSCHED_CONCURRENCY``     ``100``                         Async jobs in flight per worker
``ASYNCSCHED_THREADS``         ``8``                           Threads for sync (``def``) jobs
``ASYNCSCHED_JOB_TIMEOUT``     ``180``                         Default job timeout, seconds (RQ's)
``ASYNCSCHED_AGENT``           ``default``                     Agent name of this process
``ASYNCSCHED_TASKS``           (none)                          Comma-separated tasks.yaml files
``ASYNCSCHED_HOST``            ``127.0.0.1``                   HTTP API host for ``asyncsched run``
``ASYNCSCHED_PORT``            ``8000``                        HTTP API port
``ASYNCSCHED_API_TOKEN``       (none)                          Bearer token required by the API if set
``ASYNCSCHED_ALLOWED_FUNCTIONS`` (none)                        Comma-separated module prefixes the API
                                                               may schedule or enqueue
``ASYNCSCHED_CORS_ORIGINS``    (none)                          Comma-separated origins; CORS off if empty
``ASYNCSCHED_ALLOWED_HOSTS``   (none)                          Host names the API serves without a token
                                                               besides loopback ones; ``*`` allows any
``ASYNCSCHED_MAX_ARGS_BYTES``  ``1048576``                     Largest serialized args+kwargs of a job
``ASYNCSCHED_MAX_PAYLOAD_BYTES`` ``1048576``                   Largest serialized event: publishers
                                                               refuse, readers skip or dead-letter more
                                                               (give every process the same value)
``ASYNCSCHED_MAX_RESULT_BYTES`` ``1048576``                    Largest serialized job result
``ASYNCSCHED_RETENTION_DAYS``  ``30``                          Prune executions/events older than this
``ASYNCSCHED_EVENT_STREAM_MAXLEN`` ``100000``                  Approximate bound of each durable event
                                                               stream and of the event log stream
``ASYNCSCHED_LIFECYCLE_MAXLEN`` ``1000000``                 Hard bound of the job lifecycle stream
                                                               (history and task.* events buffer): only
                                                               reached when no Recorder keeps up (a long
                                                               database outage); 130-250 bytes of Redis
                                                               memory per record; records dropped past it
                                                               are counted and reported
``ASYNCSCHED_ENV``             (none)                          ``production`` makes start-up warn about a
                                                               Redis that may lose data; also implied by a
                                                               ``redis://`` URL with a PostgreSQL database
``ASYNCSCHED_EVENT_LOG``      ``false``                       Every event bus of the process also logs
                                                               what it publishes for the EventMessage table
``ASYNCSCHED_LOG_LEVEL``       ``INFO``                        Logging level
``ASYNCSCHED_RQ_SCHEDULER``   ``true``                        Schedulers also fire rq-scheduler's jobs
``ASYNCSCHED_TRACING``        ``false``                       OpenTelemetry spans from enqueue to run
                                                               (needs the ``otel`` extra)
=============================  ==============================  ==========================================
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ConfigurationError

__all__ = ["Settings", "configure_from_flags", "get_settings", "set_settings"]

_ENVS = {"production", "staging", "development", "test"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_ENV_VARS: Mapping[str, str] = {
    "REDIS_URL": "redis_url",
    "DATABASE_URL": "database_url",
    "RQ_KEY_PREFIX": "key_prefix",
    "ASYNCSCHED_KEY_PREFIX": "key_prefix",
    "ASYNCSCHED_QUEUES": "queues",
    "ASYNCSCHED_SERIALIZER": "serializer",
    "ASYNCSCHED_ACCEPT_PICKLE": "accept_pickle",
    "ASYNCSCHED_CONCURRENCY": "concurrency",
    "ASYNCSCHED_THREADS": "threads",
    "ASYNCSCHED_JOB_TIMEOUT": "job_timeout",
    "ASYNCSCHED_AGENT": "agent",
    "ASYNCSCHED_TASKS": "tasks",
    "ASYNCSCHED_HOST": "host",
    "ASYNCSCHED_PORT": "port",
    "ASYNCSCHED_API_TOKEN": "api_token",
    "ASYNCSCHED_ALLOWED_FUNCTIONS": "allowed_functions",
    "ASYNCSCHED_CORS_ORIGINS": "cors_origins",
    "ASYNCSCHED_ALLOWED_HOSTS": "allowed_hosts",
    "ASYNCSCHED_MAX_ARGS_BYTES": "max_args_bytes",
    "ASYNCSCHED_MAX_PAYLOAD_BYTES": "max_payload_bytes",
    "ASYNCSCHED_MAX_RESULT_BYTES": "max_result_bytes",
    "ASYNCSCHED_RETENTION_DAYS": "retention_days",
    "ASYNCSCHED_EVENT_STREAM_MAXLEN": "event_stream_maxlen",
    "ASYNCSCHED_EVENT_LOG": "event_log",
    "ASYNCSCHED_LIFECYCLE_MAXLEN": "lifecycle_maxlen",
    "ASYNCSCHED_ENV": "env",
    "ASYNCSCHED_LOG_LEVEL": "log_level",
    "ASYNCSCHED_RQ_SCHEDULER": "rq_scheduler",
    "ASYNCSCHED_TRACING": "tracing",
}
"""Environment variable -> settings field. ``ASYNCSCHED_KEY_PREFIX`` wins over RQ's ``RQ_KEY_PREFIX``."""


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration. Build with :meth:`from_env`, change with :meth:`replace`."""

    redis_url: str = "memory://"
    database_url: str = "sqlite+aiosqlite:///./asyncsched.db"
    key_prefix: str = "rq"
    queues: tuple[str, ...] = ("default",)
    serializer: str = "json"
    accept_pickle: bool = False
    concurrency: int = 100
    threads: int = 8
    job_timeout: int = 180
    agent: str = "default"
    tasks: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    api_token: str | None = field(default=None, repr=False)
    allowed_functions: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_args_bytes: int = 1_048_576
    max_payload_bytes: int = 1_048_576
    max_result_bytes: int = 1_048_576
    retention_days: int = 30
    event_stream_maxlen: int = 100_000
    event_log: bool = False
    lifecycle_maxlen: int = 1_000_000
    env: str | None = None
    log_level: str = "INFO"
    rq_scheduler: bool = True
    tracing: bool = False

    def __post_init__(self) -> None:
        if self.serializer not in ("json", "pickle"):
            raise ConfigurationError(
                f"serializer must be 'json' or 'pickle', got {self.serializer!r} (ASYNCSCHED_SERIALIZER)"
            )
        for name in (
            "concurrency",
            "threads",
            "job_timeout",
            "port",
            "event_stream_maxlen",
            "lifecycle_maxlen",
            "max_args_bytes",
            "max_payload_bytes",
            "max_result_bytes",
        ):
            if getattr(self, name) <= 0 and not (name == "job_timeout" and self.job_timeout == -1):
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)}")
        if self.env is not None and self.env.lower() not in _ENVS:
            raise ConfigurationError(
                f"env must be one of {', '.join(sorted(_ENVS))}, got {self.env!r} (ASYNCSCHED_ENV)"
            )
        if not self.queues:
            raise ConfigurationError("at least one queue is needed (ASYNCSCHED_QUEUES)")
        if not self.key_prefix or ":" in self.key_prefix:
            raise ConfigurationError(f"key prefix must be non-empty without ':', got {self.key_prefix!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``), then apply ``overrides``.

        Overrides whose value is ``None`` are ignored, so CLI flags left unset fall back to the environment.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for var, name in _ENV_VARS.items():
            if var in env:
                values[name] = _parse(var, name, types[name], env[var])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def production(self) -> bool:
        """Whether this deployment says it is production: ``ASYNCSCHED_ENV=production``, or (when unset)
        a real Redis (not ``memory://``) with a PostgreSQL database."""
        if self.env is not None:
            return self.env.lower() == "production"
        return not self.redis_url.startswith("memory://") and self.database_url.startswith("postgres")

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (``None`` values ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _parse(var: str, name: str, typ: Any, raw: str) -> Any:
    typ = str(typ)
    try:
        if typ == "bool":
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("expected true or false")
        if typ == "int":
            return int(raw)
        if typ.startswith("tuple"):
            return _split(raw)
        if typ == "str | None":
            return raw or None
        return raw
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {var}={raw!r} is invalid for {name}: {exc}") from None


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def set_settings(settings: Settings | None) -> None:
    """Replace the process-wide settings (``None`` re-reads the environment on next use)."""
    global _settings
    _settings = settings


def configure_from_flags(args: object, *, datefmt: str | None = None) -> Settings:
    """The settings of a command-line process: the environment overridden by its common flags
    (``--redis-url``, ``--database-url``, ``--key-prefix``, ``--log-level``: attributes of ``args``, an
    ``argparse.Namespace``; unset ones keep the environment's), made the process-wide settings, with
    logging configured at their level. :class:`ConfigurationError` names a bad value."""
    flags = ("redis_url", "database_url", "key_prefix", "log_level")
    settings = Settings.from_env(**{name: getattr(args, name, None) for name in flags})
    set_settings(settings)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt=datefmt,
    )
    return settings
