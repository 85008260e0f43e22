"""Redis keys of asyncsched's own (not RQ's): built here and nowhere else.

RQ's keys live in :mod:`asyncsched.rq.keys`. Ours share the same prefix (``Settings.key_prefix``, default
``rq``) so one prefix isolates a deployment, and sit under ``<prefix>:asyncsched:`` where RQ never looks.
"""

from __future__ import annotations

__all__ = [
    "agent_event_channel",
    "agent_event_channel_pattern",
    "agent_event_stream",
    "broadcast_event_channel",
    "broadcast_event_stream",
    "claiming_list",
    "claiming_registry",
    "event_log_stream",
    "lifecycle_ledger",
    "lifecycle_stream",
    "limit_key",
    "limit_keys",
    "ns",
    "paused_queue",
    "rate_limit_waits",
    "redis_marker",
    "sched_changes",
    "sched_fired",
    "sched_held",
    "sched_last",
    "sched_next",
    "sched_pending",
    "sched_sig",
    "sched_version",
    "scheduled_wake",
]


def ns(prefix: str) -> str:
    """The namespace of every asyncsched-owned key."""
    return f"{prefix}:asyncsched"


def lifecycle_stream(prefix: str) -> str:
    """STREAM of job lifecycle records (see :mod:`asyncsched._lifecycle`)."""
    return f"{ns(prefix)}:lifecycle"


def lifecycle_ledger(prefix: str) -> str:
    """HASH of the Recorder's accounting of the lifecycle stream: ``position`` (entries read or counted
    lost), ``lost`` (records dropped before the Recorder read them), ``last_loss_at`` (epoch ms)."""
    return f"{ns(prefix)}:lifecycle:ledger"


def redis_marker(prefix: str) -> str:
    """STRING set by the Recorder at start: its absence after a Redis restart means Redis lost its data."""
    return f"{ns(prefix)}:marker"


def claiming_list(prefix: str, worker: str) -> str:
    """LIST a single-queue worker BLMOVEs job ids into; its claim script, pipelined behind, empties it."""
    return f"{ns(prefix)}:claiming:{worker}"


def claiming_registry(prefix: str) -> str:
    """HASH worker name -> queue of every claiming list, so the reaper can return a dead worker's ids."""
    return f"{ns(prefix)}:claiming"


def paused_queue(prefix: str, queue: str) -> str:
    """STRING present while ``queue`` is paused: our workers' claim script takes nothing from it."""
    return f"{ns(prefix)}:paused:{queue}"


def rate_limit_waits(prefix: str) -> str:
    """Hash queue -> jobs that had to wait for a rate-limit slot (``rl_count_wait`` in
    ``rq/scripts/lib_ratelimit.lua``; exported as ``asyncsched_rate_limit_waits_total``)."""
    return f"{ns(prefix)}:rate-limit-waits"


def event_log_stream(prefix: str) -> str:
    """STREAM of published event envelopes to persist as ``EventMessage`` rows (when persistence is on)."""
    return f"{ns(prefix)}:eventlog"


def agent_event_channel(prefix: str, agent: str) -> str:
    """Pub/sub CHANNEL of events targeted at ``agent``."""
    return f"{ns(prefix)}:events:agent:{agent}"


def agent_event_channel_pattern(prefix: str) -> str:
    """Pub/sub PATTERN matching every agent's channel (agent names never contain glob characters)."""
    return f"{ns(prefix)}:events:agent:*"


def broadcast_event_channel(prefix: str) -> str:
    """Pub/sub CHANNEL of broadcast events (no target agent)."""
    return f"{ns(prefix)}:events:broadcast"


def agent_event_stream(prefix: str, agent: str) -> str:
    """STREAM of events targeted at ``agent``, kept for its durable subscribers (consumer group = agent)."""
    return f"{ns(prefix)}:events:stream:agent:{agent}"


def broadcast_event_stream(prefix: str) -> str:
    """STREAM of broadcast events, kept for durable subscribers (one consumer group per agent)."""
    return f"{ns(prefix)}:events:stream:broadcast"


# Scheduler (asyncsched.scheduler). SQL holds the schedules; these are the hot-path index, rebuilt from SQL.


def sched_next(prefix: str) -> str:
    """ZSET task id -> next fire time (epoch milliseconds): what an idle scheduler sleeps until."""
    return f"{ns(prefix)}:sched:next"


def sched_sig(prefix: str) -> str:
    """HASH task id -> signature of the schedule (type, schedule, zone, anchor, enabled) it is indexed for."""
    return f"{ns(prefix)}:sched:sig"


def sched_pending(prefix: str) -> str:
    """ZSET ``<task id>:<tick ms>`` -> lease deadline (ms): claimed ticks not yet enqueued (recovery)."""
    return f"{ns(prefix)}:sched:pending"


def sched_fired(prefix: str) -> str:
    """STREAM of claimed ticks (task, tick, job id), trimmed: what fired, for humans and tests."""
    return f"{ns(prefix)}:sched:fired"


def sched_last(prefix: str) -> str:
    """HASH task id -> ``<tick ms> <job id>`` of its latest run (run or held): what ``overlap`` checks."""
    return f"{ns(prefix)}:sched:last"


def sched_held(prefix: str) -> str:
    """HASH ``<task id>:<tick ms>`` -> job id a held run (``overlap: queue``) waits for, until enqueued."""
    return f"{ns(prefix)}:sched:held"


def scheduled_wake(prefix: str, queue: str) -> str:
    """Pub/sub channel: a job of ``queue`` was scheduled to run at the epoch ms in the message, so idle
    workers' promoters wake for it in time (published by ``rq/scripts/enqueue.lua``, which spells it too)."""
    return f"{ns(prefix)}:wake:{queue}"


def sched_changes(prefix: str) -> str:
    """Pub/sub channel: a schedule changed (register, edit, enable, disable, delete); replicas reload."""
    return f"{ns(prefix)}:sched:changes"


def sched_version(prefix: str) -> str:
    """Counter bumped with every change, checked by idle replicas in case a pub/sub message was missed."""
    return f"{ns(prefix)}:sched:version"


def dead_letter_stream(prefix: str) -> str:
    """STREAM of durable events no consumer could handle (malformed, or callbacks failed every retry)."""
    return f"{ns(prefix)}:events:dead"


def durable_consumer_alive(prefix: str, agent: str, consumer: str) -> str:
    """STRING with a TTL: the heartbeat of a durable consumer of ``agent`` (absent: the consumer is gone)."""
    return f"{ns(prefix)}:events:alive:{agent}:{consumer}"


def limit_keys(prefix: str) -> str:
    """SET of the flow-limit keys in use (``rq/scripts/lib_limits.lua`` documents every key of a limit)."""
    return f"{ns(prefix)}:limit-keys"


def limit_key(prefix: str, key: str, part: str = "") -> str:
    """A flow limit's HASH (``max``, ``rate``, ``period``), or its ZSET ``part``: ``active`` (running jobs),
    ``starts`` (starts in the rate window) or ``waiting`` (parked jobs). The Lua scripts build the same."""
    base = f"{ns(prefix)}:limit:{key}"
    return f"{base}:{part}" if part else base
