"""Every Redis key asyncsched touches, RQ's and its own: built here and nowhere else (the job hash's
fields are named in :mod:`asyncsched.rq.jobhash`).

Verified against python-rq 2.12.0 and 3.0.0 (``rq/{queue,job,registry,executions,results,worker}``); the
prefix is RQ 3's ``RQ_KEY_PREFIX`` (``Settings.key_prefix``, default ``rq``). RQ 2.x hard-codes ``rq``.

==========================================  ======  ===================================================
key                                         type    content
==========================================  ======  ===================================================
``<p>:queues``                              SET     full queue keys (``<p>:queue:<q>``)
``<p>:queue:<q>``                           LIST    job ids; producers RPUSH, workers pop from the left
``<p>:queue:<q>:intermediate``              LIST    RQ workers' BLMOVE target (ours use their own list)
``<p>:job:<id>``                            HASH    the job (:mod:`asyncsched.rq.codec`)
``<p>:job:<id>:dependents``                  SET     ids of the jobs waiting for this one
``<p>:job::<id>:dependencies``              SET     ids this job waits for (RQ's two colons)
``<p>:results:<id>``                        STREAM  results (type 1 ok, 2 failed, 3 stopped, 4 retried)
``<p>:wip:<q>``                             ZSET    started: ``<job>:<exec>`` -> lease expiry (s)
``<p>:finished|failed:<q>``                 ZSET    job -> expiry (s)
``<p>:deferred|scheduled|canceled:<q>``     ZSET    job -> creation / run-at / cancel time (s)
``<p>:execution:<job>:<exec>``              HASH    one running execution
``<p>:executions:<job>``                    ZSET    exec -> expiry + 60
``<p>:worker:<name>``                       HASH    worker registration (``rq info``)
``<p>:worker:<name>:executions``            SET     RQ 3: the worker's running ``<job>:<exec>``
``<p>:workers``, ``<p>:workers:<q>``        SET     worker keys
``<p>:pubsub:<name>``                       PUBSUB  JSON commands (shutdown, stop-job, kill-horse)
``<p>:scheduler-lock:<q>``                  STRING  holder of the right to promote scheduled jobs
``<p>:suspended``                           STRING  ``rq suspend``
``<p>:rl:<key>``                            HASH    RQ 3 RateLimit: ``concurrency``
``<p>:rl:<key>:allowed|rate_limited``       ZSET    RQ 3: ids holding a slot / waiting for one (time)
``<p>:rl-keys``                             SET     RQ 3: rate limit keys in use
``<p>:asyncsched:limit:<key>[:part]``       H/ZSET  asyncsched's flow limits (``lib_limits.lua``)
``<p>:scheduler:scheduled_jobs``            ZSET    rq-scheduler 0.14: job -> next run (epoch s)
``<p>:scheduler_lock``                      STRING  rq-scheduler: held during one firing pass
``<p>:scheduler_instance:<name>``           HASH    rq-scheduler: ``birth`` (``death`` once stopped)
==========================================  ======  ===================================================

asyncsched's own keys share the prefix (one prefix isolates a deployment) and sit under ``<p>:asyncsched:``
(``<ns>`` below), where RQ never looks. They are built by the functions at the end of this module.

==========================================  ======  ===================================================
key                                         type    content
==========================================  ======  ===================================================
``<ns>:lifecycle``                          STREAM  job lifecycle records (:mod:`asyncsched._lifecycle`)
``<ns>:lifecycle:ledger``                   HASH    the Recorder's accounting of that stream
``<ns>:marker``                             STRING  set by the Recorder: gone after Redis lost its data
``<ns>:marker:{<n>}``                       STRING  the same, on a cluster: one per master, in its slots
``<ns>:claiming:<worker>``                  LIST    a single-queue worker's BLMOVE target
``<ns>:claiming``                           HASH    worker -> queue of every claiming list
``<ns>:paused:<q>``                         STRING  present while the queue is paused
``<ns>:rate-limit-waits``                   HASH    queue -> jobs that waited for an RQ 3 rate slot
``<ns>:wake:<q>``                           PUBSUB  a job of ``q`` was scheduled (epoch ms)
``<ns>:enqueue-template:<q>``, ``<ns>:result-scratch:<q>``  HASH/STREAM  within one enqueue/finish call
``<ns>:limit-keys``, ``<ns>:limit:<key>...``  SET/H/Z flow limits (``lib_limits.lua``)
``<ns>:eventlog``                           STREAM  published events to persist
``<ns>:events:...``                         PUBSUB/STREAM  event bus channels, durable streams, alive keys
``<ns>:sched:...``                          mixed   the scheduler's hot-path index (see the functions)
==========================================  ======  ===================================================

The Lua scripts (``rq/scripts/*.lua``) take the keys they know before the call as ``KEYS`` (built here);
keys they derive from data they read (a popped job id, a job's ``origin``, a dependent's id) are built by
``rq/scripts/lib_keys.lua``, the one place Lua spells a key, mirroring the methods below (listed in
``docs/architecture.md``, "Wire format"). **Redis Cluster layout** (``cluster=True``): see
:mod:`asyncsched.rq.slots`; single-node mode (the default) keeps RQ's exact names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, overload

from .slots import (
    cluster_tag,
    enqueue_template,
    events_tag,
    lifecycle_tag,
    ns,
    queue_registered,
    sched_tag,
    unused_in_slot,
)

__all__ = [
    "RQKeys", "agent_event_channel", "agent_event_channel_pattern", "agent_event_stream",
    "broadcast_event_channel", "broadcast_event_stream", "claiming_list", "claiming_registry", "cluster_tag",
    "dead_letter_stream", "durable_consumer_alive", "enqueue_template", "event_log_stream", "events_tag",
    "lifecycle_ledger", "lifecycle_stream", "lifecycle_tag", "limit_due", "limit_key", "limit_keys",
    "limit_seq", "ns", "paused_queue", "quarantine", "queue_registered", "rate_limit_waits", "redis_marker",
    "sched_changes", "sched_fired", "sched_held", "sched_last", "sched_next", "sched_pending", "sched_sig",
    "sched_tag", "sched_version", "scheduled_wake", "unused_in_slot",
]  # fmt: skip


class _Fixed:
    """A key of :class:`RQKeys` that takes no argument: ``<prefix>:<suffix>``, read as an attribute."""

    __slots__ = ("suffix",)

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    @overload
    def __get__(self, keys: None, owner: type[RQKeys]) -> _Fixed: ...
    @overload
    def __get__(self, keys: RQKeys, owner: type[RQKeys]) -> str: ...
    def __get__(self, keys: RQKeys | None, owner: type[RQKeys]) -> str | _Fixed:
        return self if keys is None else f"{keys.prefix}:{self.suffix}"


@dataclass(frozen=True, slots=True)
class RQKeys:
    """Key builder for one prefix. ``cluster``: the Redis Cluster layout (queue names as hash tags; see the
    module's docstring), else RQ's exact key names."""

    prefix: str = "rq"
    cluster: bool = False

    def _q(self, name: str) -> str:
        return cluster_tag(name, self.cluster)

    def name(self, queue: str) -> str:
        """The name ``queue`` has in Redis: itself, or in cluster mode its hash tag ``{queue}`` (what the
        scripts are given, and a cluster job's ``origin``); a tag already is returned as it is."""
        return cluster_tag(queue, self.cluster)

    def job_id(self, queue: str, job_id: str) -> str:
        """The id a job of ``queue`` is stored under: ``job_id`` itself, or in cluster mode ``{queue}job_id``
        (unless it already starts with that tag), so every key derived from the id shares the queue's slot."""
        if not self.cluster:
            return job_id
        tag = cluster_tag(queue, True)
        return job_id if job_id.startswith(tag) else tag + job_id

    queues = _Fixed("queues")
    workers = _Fixed("workers")
    suspended = _Fixed("suspended")

    def queue(self, name: str) -> str:
        return f"{self.prefix}:queue:{self._q(name)}"

    def queue_name(self, key: str | bytes) -> str:
        """Inverse of :meth:`queue`."""
        text = key.decode() if isinstance(key, bytes) else key
        name = text[len(f"{self.prefix}:queue:") :]
        return name[1:-1] if self.cluster and name.startswith("{") and name.endswith("}") else name

    def intermediate(self, name: str) -> str:
        return f"{self.prefix}:queue:{self._q(name)}:intermediate"

    def first_seen(self, name: str, job_id: str) -> str:
        """STRING: when the reaper first saw ``job_id`` in the intermediate list of ``name`` (RQ's
        ``Queue.intermediate_queue``; ``key_first_seen`` in ``lib_keys.lua``)."""
        return f"{self.intermediate(name)}:first_seen:{job_id}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def results(self, job_id: str) -> str:
        return f"{self.prefix}:results:{job_id}"

    def wip(self, queue: str) -> str:
        return f"{self.prefix}:wip:{self._q(queue)}"

    def finished(self, queue: str) -> str:
        return f"{self.prefix}:finished:{self._q(queue)}"

    def failed(self, queue: str) -> str:
        return f"{self.prefix}:failed:{self._q(queue)}"

    def deferred(self, queue: str) -> str:
        return f"{self.prefix}:deferred:{self._q(queue)}"

    def scheduled(self, queue: str) -> str:
        return f"{self.prefix}:scheduled:{self._q(queue)}"

    def canceled(self, queue: str) -> str:
        return f"{self.prefix}:canceled:{self._q(queue)}"

    def execution(self, job_id: str, execution_id: str) -> str:
        return f"{self.prefix}:execution:{job_id}:{execution_id}"

    def executions(self, job_id: str) -> str:
        return f"{self.prefix}:executions:{job_id}"

    def dependents(self, job_id: str) -> str:
        """SET of the ids of jobs waiting for ``job_id`` (``rq.job.Job.dependents_key``)."""
        return f"{self.prefix}:job:{job_id}:dependents"

    def dependencies(self, job_id: str) -> str:
        """SET of the ids ``job_id`` waits for; RQ spells it with two colons
        (``rq.job.Job.dependencies_key``)."""
        return f"{self.prefix}:job::{job_id}:dependencies"

    def execution_keys(self, executions: Iterable[tuple[str, str, str]]) -> list[str]:
        """The keys finishing each ``(job id, execution id, queue)`` touches, five per execution, built at
        once: :meth:`job`, :meth:`execution`, :meth:`executions`, :meth:`results`, :meth:`dependents`."""
        p = self.prefix
        job, execution, executions_, results = (
            f"{p}:job:",
            f"{p}:execution:",
            f"{p}:executions:",
            f"{p}:results:",
        )
        out: list[str] = []
        add = out.extend
        for job_id, execution_id, _ in executions:
            jk = job + job_id
            add(
                (
                    jk,
                    f"{execution}{job_id}:{execution_id}",
                    executions_ + job_id,
                    results + job_id,
                    jk + ":dependents",
                )
            )
        return out

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def worker_executions(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}:executions"

    def workers_of(self, queue: str) -> str:
        return f"{self.prefix}:workers:{self._q(queue)}"

    def pubsub(self, worker_name: str) -> str:
        return f"{self.prefix}:pubsub:{worker_name}"

    def scheduler_lock(self, queue: str) -> str:
        return f"{self.prefix}:scheduler-lock:{self._q(queue)}"

    # RQ 3's RateLimit (``rq.rate_limit.RateLimitRegistry``)
    rate_limit_keys = _Fixed("rl-keys")

    def rate_limit(self, key: str, part: str = "") -> str:
        """The config HASH of a RateLimit key, or its ZSET ``part``: ``allowed`` or ``rate_limited``."""
        return f"{self.prefix}:rl:{key}:{part}" if part else f"{self.prefix}:rl:{key}"

    # rq-scheduler 0.14 (``rq_scheduler.Scheduler``'s class attributes; its ``rq`` is this prefix).
    rq_scheduler_jobs = _Fixed("scheduler:scheduled_jobs")

    rq_scheduler_lock = _Fixed("scheduler_lock")

    def rq_scheduler_instance(self, name: str) -> str:
        return f"{self.prefix}:scheduler_instance:{name}"


# asyncsched's own keys (not RQ's), under ``<prefix>:asyncsched:``


def lifecycle_stream(prefix: str, queue: str | None = None, *, cluster: bool = False) -> str:
    """STREAM of job lifecycle records (see :mod:`asyncsched._lifecycle`); in cluster mode one per queue and
    one of the scheduler (:func:`lifecycle_tag`)."""
    return lifecycle_tag(prefix, queue, cluster)


def lifecycle_ledger(prefix: str, queue: str | None = None, *, cluster: bool = False) -> str:
    """HASH of the Recorder's accounting of the lifecycle stream: ``position`` (entries read or counted
    lost), ``lost`` (records dropped before the Recorder read them), ``last_loss_at`` (epoch ms); in cluster
    mode one per lifecycle stream, in its slot."""
    return f"{lifecycle_tag(prefix, queue, cluster)}:ledger"


def redis_marker(prefix: str, tag: int | None = None) -> str:
    """STRING set by the Recorder at start: its absence after a Redis restart means Redis lost its data. On
    a cluster one per master, ``<ns>:marker:{<tag>}`` in one of its slots (:mod:`asyncsched.store._redis_wipe`
    picks the tag)."""
    return f"{ns(prefix)}:marker" if tag is None else f"{ns(prefix)}:marker:{{{tag}}}"


def claiming_list(prefix: str, worker: str) -> str:
    """LIST a single-queue worker BLMOVEs job ids into; its claim script, pipelined behind, empties it."""
    return f"{ns(prefix)}:claiming:{worker}"


def claiming_registry(prefix: str, queue: str = "") -> str:
    """HASH worker name -> queue of every claiming list, so the reaper can return a dead worker's ids; on a
    cluster one per queue (``queue``: its name in Redis, ``{q}``), in the queue's slot."""
    return f"{ns(prefix)}:claiming:{queue}" if queue else f"{ns(prefix)}:claiming"


def paused_queue(prefix: str, queue: str) -> str:
    """STRING present while ``queue`` is paused: our workers' claim script takes nothing from it."""
    return f"{ns(prefix)}:paused:{queue}"


def rate_limit_waits(prefix: str) -> str:
    """Hash queue -> jobs that had to wait for a rate-limit slot (``rl_count_wait`` in
    ``rq/scripts/lib_ratelimit.lua``; exported as ``asyncsched_rate_limit_waits_total``)."""
    return f"{ns(prefix)}:rate-limit-waits"


def event_log_stream(prefix: str, *, cluster: bool = False) -> str:
    """STREAM of published event envelopes to persist as ``EventMessage`` rows (when persistence is on)."""
    return f"{events_tag(prefix, True)}:eventlog" if cluster else f"{ns(prefix)}:eventlog"


def agent_event_channel(prefix: str, agent: str) -> str:
    """Pub/sub CHANNEL of events targeted at ``agent``."""
    return f"{ns(prefix)}:events:agent:{agent}"


def agent_event_channel_pattern(prefix: str) -> str:
    """Pub/sub PATTERN matching every agent's channel (agent names never contain glob characters)."""
    return f"{ns(prefix)}:events:agent:*"


def broadcast_event_channel(prefix: str) -> str:
    """Pub/sub CHANNEL of broadcast events (no target agent)."""
    return f"{ns(prefix)}:events:broadcast"


def agent_event_stream(prefix: str, agent: str, *, cluster: bool = False) -> str:
    """STREAM of events targeted at ``agent``, kept for its durable subscribers (consumer group = agent)."""
    return f"{events_tag(prefix, cluster)}:stream:agent:{agent}"


def scheduled_wake(prefix: str, queue: str) -> str:
    """Pub/sub channel: a job of ``queue`` was scheduled to run at the epoch ms in the message, so idle
    workers' promoters wake for it in time (published by ``rq/scripts/enqueue.lua``, which spells it too)."""
    return f"{ns(prefix)}:wake:{queue}"


def sched_changes(prefix: str) -> str:
    """Pub/sub channel: a schedule changed (register, edit, enable, disable, delete); replicas reload."""
    return f"{ns(prefix)}:sched:changes"


def durable_consumer_alive(prefix: str, agent: str, consumer: str, *, cluster: bool = False) -> str:
    """STRING with a TTL: the heartbeat of a durable consumer of ``agent`` (absent: the consumer is gone)."""
    return f"{events_tag(prefix, cluster)}:alive:{agent}:{consumer}"


def limit_keys(prefix: str) -> str:
    """SET of the flow-limit keys in use (``rq/scripts/lib_limits.lua`` documents every key of a limit)."""
    return f"{ns(prefix)}:limit-keys"


def limit_due(prefix: str) -> str:
    """ZSET limit key -> when its next parked job may start (``lib_limits.lua``)."""
    return f"{ns(prefix)}:limit-due"


def limit_seq(prefix: str) -> str:
    """Counter ordering parked jobs of the flow limits (``lib_limits.lua``)."""
    return f"{ns(prefix)}:limit-seq"


def quarantine(prefix: str, queue: str) -> str:
    """LIST where ``reap.lua`` sets aside ids of ``queue`` a dead worker claimed while the key was no list."""
    return f"{ns(prefix)}:quarantine:{queue}"


def limit_key(prefix: str, key: str, part: str = "") -> str:
    """A flow limit's HASH (``max``, ``rate``, ``period``), or its ZSET ``part``: ``active`` (running jobs),
    ``starts`` (starts in the rate window) or ``waiting`` (parked jobs). The Lua scripts build the same."""
    base = f"{ns(prefix)}:limit:{key}"
    return f"{base}:{part}" if part else base


class TaggedKey(Protocol):
    """A key of one component's slot: ``<base>:<suffix>``, the base a hash tag in cluster mode."""

    def __call__(self, prefix: str, *, cluster: bool = False) -> str: ...


# The keys of the event bus's slot and of the scheduler's index (asyncsched.scheduler: SQL holds the
# schedules, these are its hot-path index, rebuilt from SQL), one a line: name, slot, suffix, content.
_TAGGED = """
sched_next             sched  next              ZSET task id -> next fire time (epoch ms)
sched_sig              sched  sig               HASH task id -> signature of the schedule it is indexed for
sched_pending          sched  pending           ZSET <task>:<tick ms> -> lease deadline (ms): claimed, unsent
sched_fired            sched  fired             STREAM of claimed ticks (task, tick, job id), trimmed
sched_last             sched  last              HASH task id -> <tick ms> <job id> of its latest run (overlap)
sched_held             sched  held              HASH <task>:<tick ms> -> job id a held run waits for
sched_version          sched  version           Counter bumped with every change (replicas' missed notices)
dead_letter_stream     events dead              STREAM of durable events no consumer could handle
broadcast_event_stream events stream:broadcast  STREAM of broadcast events, kept for durable subscribers
"""
_SLOTS: dict[str, Callable[[str, bool], str]] = {"sched": sched_tag, "events": events_tag}


def _tagged(line: str) -> TaggedKey:
    name, slot, suffix, doc = line.split(maxsplit=3)
    tag = _SLOTS[slot]

    def key(prefix: str, *, cluster: bool = False) -> str:
        return f"{tag(prefix, cluster)}:{suffix}"

    key.__name__ = key.__qualname__ = name
    key.__doc__ = doc + "."
    return key


(
    sched_next, sched_sig, sched_pending, sched_fired, sched_last, sched_held, sched_version,
    dead_letter_stream, broadcast_event_stream,
) = map(_tagged, _TAGGED.strip().splitlines())  # fmt: skip
