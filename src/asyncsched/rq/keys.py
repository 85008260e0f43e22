"""Every RQ key, registry and hash field asyncsched touches: built here and nowhere else.

Verified against python-rq 2.12.0 and 3.0.0 (``rq/{queue,job,registry,executions,results,worker}``); the
prefix is RQ 3's ``RQ_KEY_PREFIX`` (``Settings.key_prefix``, default ``rq``). RQ 2.x hard-codes ``rq``.

==========================================  ======  ===================================================
key                                         type    content
==========================================  ======  ===================================================
``<p>:queues``                              SET     full queue keys (``<p>:queue:<q>``)
``<p>:queue:<q>``                           LIST    job ids; producers RPUSH, workers pop from the left
``<p>:queue:<q>:intermediate``              LIST    RQ workers' BLMOVE target (ours use their own list)
``<p>:job:<id>``                            HASH    the job (:mod:`asyncsched.rq.codec`)
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
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JOB_FIELDS", "RQ_STATUSES", "RQKeys"]

RQ_STATUSES = (
    "created",
    "queued",
    "finished",
    "failed",
    "started",
    "deferred",
    "scheduled",
    "stopped",
    "canceled",
    "rate_limited",
)
"""``rq.job.JobStatus`` values (2.x and 3.0; ``rate_limited`` is RQ 3's)."""

JOB_FIELDS = (
    "data",
    "created_at",
    "status",
    "success_callback_name",
    "failure_callback_name",
    "stopped_callback_name",
    "started_at",
    "ended_at",
    "last_heartbeat",
    "worker_name",
    "group_id",
    "origin",
    "description",
    "enqueued_at",
    "timeout",
    "result_ttl",
    "failure_ttl",
    "ttl",
    "meta",
    "retries_left",
    "retry_intervals",
    "enqueue_at_front_on_retry",
    "success_callback_timeout",
    "failure_callback_timeout",
    "stopped_callback_timeout",
    "dependency_id",
    "dependency_ids",
    "allow_dependency_failures",
    "enqueue_at_front",
    "repeats_left",
    "repeat_intervals",
    "rate_limit_key",
    "rate_limit_concurrency",
)
"""Hash fields RQ writes that we write or read (RQ ignores fields it does not know)."""


@dataclass(frozen=True, slots=True)
class RQKeys:
    """Key builder for one prefix."""

    prefix: str = "rq"

    @property
    def queues(self) -> str:
        return f"{self.prefix}:queues"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    @property
    def suspended(self) -> str:
        return f"{self.prefix}:suspended"

    def queue(self, name: str) -> str:
        return f"{self.prefix}:queue:{name}"

    def queue_name(self, key: str | bytes) -> str:
        """Inverse of :meth:`queue`."""
        text = key.decode() if isinstance(key, bytes) else key
        return text[len(self.queue("")) :]

    def intermediate(self, name: str) -> str:
        return f"{self.prefix}:queue:{name}:intermediate"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def results(self, job_id: str) -> str:
        return f"{self.prefix}:results:{job_id}"

    def wip(self, queue: str) -> str:
        return f"{self.prefix}:wip:{queue}"

    def finished(self, queue: str) -> str:
        return f"{self.prefix}:finished:{queue}"

    def failed(self, queue: str) -> str:
        return f"{self.prefix}:failed:{queue}"

    def deferred(self, queue: str) -> str:
        return f"{self.prefix}:deferred:{queue}"

    def scheduled(self, queue: str) -> str:
        return f"{self.prefix}:scheduled:{queue}"

    def canceled(self, queue: str) -> str:
        return f"{self.prefix}:canceled:{queue}"

    def execution(self, job_id: str, execution_id: str) -> str:
        return f"{self.prefix}:execution:{job_id}:{execution_id}"

    def executions(self, job_id: str) -> str:
        return f"{self.prefix}:executions:{job_id}"

    def worker(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def worker_executions(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}:executions"

    def workers_of(self, queue: str) -> str:
        return f"{self.prefix}:workers:{queue}"

    def pubsub(self, worker_name: str) -> str:
        return f"{self.prefix}:pubsub:{worker_name}"

    def scheduler_lock(self, queue: str) -> str:
        return f"{self.prefix}:scheduler-lock:{queue}"

    # RQ 3's RateLimit (``rq.rate_limit.RateLimitRegistry``)
    @property
    def rate_limit_keys(self) -> str:
        return f"{self.prefix}:rl-keys"

    def rate_limit(self, key: str, part: str = "") -> str:
        """The config HASH of a RateLimit key, or its ZSET ``part``: ``allowed`` or ``rate_limited``."""
        return f"{self.prefix}:rl:{key}:{part}" if part else f"{self.prefix}:rl:{key}"

    # rq-scheduler 0.14 (``rq_scheduler.Scheduler``'s class attributes; its ``rq`` is this prefix).
    @property
    def rq_scheduler_jobs(self) -> str:
        return f"{self.prefix}:scheduler:scheduled_jobs"

    @property
    def rq_scheduler_lock(self) -> str:
        return f"{self.prefix}:scheduler_lock"

    def rq_scheduler_instance(self, name: str) -> str:
        return f"{self.prefix}:scheduler_instance:{name}"
