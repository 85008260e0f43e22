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

__all__ = [
    "cluster_tag",
    "events_tag",
    "id_tag",
    "lifecycle_tag",
    "ns",
    "queue_registered",
    "sched_status_mirror",
    "sched_tag",
    "untagged",
    "unused_in_slot",
    "worker_alias",
]  # fmt: skip


def ns(prefix: str) -> str:
    """The namespace of every asyncsched-owned key."""
    return f"{prefix}:asyncsched"


def cluster_tag(name: str, cluster: bool) -> str:
    """``name`` as a Redis Cluster hash tag (``{name}``) in cluster mode, else unchanged. A name with a brace
    cannot be a tag: refused (:class:`ConfigurationError`) in cluster mode; a name that is a tag already
    (``{q}``: a queue's name in Redis on a cluster) is returned as it is."""
    if not cluster:
        return name
    if name[:1] == "{" and name.find("}") == len(name) - 1 and name.count("{") == 1 and len(name) > 2:
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


def id_tag(job_id: str) -> str:
    """The hash tag a cluster job id starts with (``{q}`` of ``{q}<uuid>``: the name of its queue in Redis),
    or ``""`` for an id without one (a single-node id)."""
    if job_id[:1] != "{":
        return ""
    end = job_id.find("}")
    return job_id[: end + 1] if end > 1 else ""


def worker_alias(worker: str, queue: str) -> str:
    """Cluster mode only: the name a worker has in the scripts of one of its queues, ``{q}<worker>``
    (``queue`` is the queue's name in Redis, ``{q}``), so that the keys the scripts derive from a worker's
    name (``worker:<w>``, ``worker:<w>:executions``, its claiming list, ``pubsub:<w>``) share the queue's
    slot. The worker's cluster-wide registration keeps its plain name."""
    return f"{queue}{worker}"


def untagged(name: str | None) -> str | None:
    """Cluster mode: a name as users know it, without the tag it starts with in Redis (a queue's ``{q}``
    -> ``q``, a worker's alias ``{q}<w>`` -> ``<w>``)."""
    if name is None:
        return None
    tag = id_tag(name)
    return (name[1:-1] if tag == name else name[len(tag) :]) if tag else name


def queue_registered(prefix: str, queue: str) -> str:
    """Cluster mode only: SET in the slot of ``queue`` (its name in Redis, ``{q}``) where ``enqueue.lua`` and
    ``requeue.lua`` add the queue's key in place of ``<p>:queues`` (another slot; added to outside them)."""
    return f"{ns(prefix)}:queues:{queue}"


def unused_in_slot(prefix: str, queue: str, what: str) -> str:
    """Cluster mode only: a key in the slot of ``queue`` (``{q}``) that nothing writes, given to a script in
    place of a cluster-wide key (``what``: ``suspended``, ``rl-keys``) it reads but cannot reach there. The
    feature behind it is checked outside the script (suspension) or refused on a cluster (RQ 3's
    ``RateLimit``)."""
    return f"{ns(prefix)}:unused:{queue}:{what}"


def result_scratch(prefix: str, queue: str) -> str:
    """STREAM ``finish.lua`` writes a job's result entry into, COPYs to the job's results stream (a copy is
    sized to its entry; a stream Redis creates by ``XADD`` reserves ~4 KB) and deletes at once (in the slot
    of ``queue``, its name in Redis: ``q`` or ``{q}``)."""
    return f"{ns(prefix)}:result-scratch:{queue}"


def enqueue_template(prefix: str, queue: str) -> str:
    """HASH ``enqueue.lua`` writes the fields a run of ``queue``'s jobs share into, COPYs to each job and
    deletes before it returns (in the slot of ``queue``, its name in Redis: ``q`` or ``{q}``)."""
    return f"{ns(prefix)}:enqueue-template:{queue}"
