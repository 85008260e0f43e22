"""**Redis Cluster layout** (``cluster=True``, chosen when the client is a cluster client:
:func:`asyncsched._redis.is_cluster`).

Every key a script touches for one queue must hash to one slot, so the queue's name is a hash tag:
queue-level keys spell it ``{<q>}`` (``<p>:queue:{<q>}``, ``<p>:wip:{<q>}``...) and a job's id starts with
it (:meth:`~asyncsched.rq.keys.RQKeys.job_id`: ``{<q>}<uuid>``), so ``<p>:job:{<q>}<uuid>``, its results,
executions, dependents and dependencies follow the queue's slot with no change to how they are derived
from the id (in :mod:`asyncsched.rq.keys` or ``lib_keys.lua``). Queues spread over the slots by name.

asyncsched's own keys that are not a queue's share one tag per component: the event bus's streams
``{<ns>:events}:...`` and the scheduler's index ``{<ns>:sched}:...`` (pub/sub channels are not keys and
keep their names). The lifecycle stream is one per queue (``<ns>:lifecycle:{<q>}``) plus the scheduler's
(``{<ns>:sched}:lifecycle``). Cluster-wide sets (``<p>:queues``, ``<p>:workers``, the flow limits' sets)
are never touched by the same script as a queue's keys. Single-node mode (``cluster=False``, the default)
keeps RQ's exact names.
"""

from __future__ import annotations

from ..exceptions import ConfigurationError

__all__ = ["cluster_tag", "events_tag", "lifecycle_tag", "ns", "sched_status_mirror", "sched_tag"]


def ns(prefix: str) -> str:
    """The namespace of every asyncsched-owned key."""
    return f"{prefix}:asyncsched"


def cluster_tag(name: str, cluster: bool) -> str:
    """``name`` as a Redis Cluster hash tag (``{name}``) in cluster mode, else unchanged. A name with a brace
    cannot be a tag: refused (:class:`ConfigurationError`) in cluster mode."""
    if not cluster:
        return name
    if "{" in name or "}" in name:
        raise ConfigurationError(
            f"{name!r}: names used as Redis Cluster hash tags cannot contain '{{' or '}}'"
        )
    return f"{{{name}}}"


def events_tag(prefix: str, cluster: bool = False) -> str:
    """The base of the event bus's keys: ``<ns>:events``, a hash tag in cluster mode (one slot for the bus:
    ``publish.lua`` writes a target's stream and the event log together)."""
    return cluster_tag(f"{ns(prefix)}:events", cluster)


def sched_tag(prefix: str, cluster: bool = False) -> str:
    """The base of the scheduler's index keys: ``<ns>:sched``, a hash tag in cluster mode (one slot: the
    claim script moves a tick through several of them at once)."""
    return cluster_tag(f"{ns(prefix)}:sched", cluster)


def lifecycle_tag(prefix: str, queue: str | None = None, cluster: bool = False) -> str:
    """Which lifecycle stream a writer appends to: the one stream ``<ns>:lifecycle`` on a single node; in
    cluster mode the stream of ``queue`` (``<ns>:lifecycle:{<q>}``, in the queue's slot) or, with no queue,
    the scheduler's (``{<ns>:sched}:lifecycle``, in its index's slot)."""
    if not cluster:
        return f"{ns(prefix)}:lifecycle"
    if queue is None:
        return f"{sched_tag(prefix, True)}:lifecycle"
    return f"{ns(prefix)}:lifecycle:{cluster_tag(queue, True)}"


def sched_status_mirror(prefix: str) -> str:
    """Cluster mode only: the base under which a short-lived copy of a previous run's ``status`` lives in
    the scheduler's slot, ``{<ns>:sched}:status:job:<job id>`` (``RQKeys(base).job(id)``, ``key_job`` in
    lib_keys.lua), which its claim script reads for ``overlap`` (the job hash itself is in its queue's
    slot; see :mod:`asyncsched.scheduler._overlap`)."""
    return f"{sched_tag(prefix, True)}:status"
