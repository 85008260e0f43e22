"""The queue on a Redis Cluster (docs/architecture.md, "Redis Cluster"): a queue's name in Redis is its hash
tag ``{q}`` (the jobs' ``origin``), job ids start with it (``{q}<uuid>``), and every script call touches one
queue: an enqueue batch is split into one call per queue, each appending to its queue's lifecycle stream,
and ``<p>:queues`` is added to outside the scripts. Features whose keys span queues are refused
(:class:`~asyncsched.exceptions.ClusterUnsupported`). Chosen once, when the queue is built: the single-node
path never runs any of this.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from .._keys import lifecycle_stream, queue_registered
from .._redis.scripts import Reply
from ..exceptions import ClusterUnsupported, InvalidJob, JobNotFound
from ..rq._calls import EnqueueCall
from ..rq.keys import RQKeys
from ..rq.slots import cluster_tag, id_tag, untagged, worker_alias
from ._enqueue import JOB_ID, EnqueueOptions, Part, Preparer, segments, uuid4_text
from ._limits import Limit

__all__ = [
    "CLUSTER_JOB_ID", "ClusterPreparer", "cluster_calls", "fold_aliases", "refuse_limits", "stream_of_job",
]  # fmt: skip

CLUSTER_JOB_ID = re.compile(r"\A\{[^{}]+\}[A-Za-z0-9_-]+\Z")

_SPANNING = (
    "flow limits (rate_limit, max_concurrency, a queue's limits) and RQ 3 rate limits keep cluster-wide "
    "sets: not supported on a Redis Cluster"
)


def refuse_limits(limits: Mapping[str, Limit]) -> None:
    """A queue's flow-limit policies: refused on a cluster."""
    if limits:
        raise ClusterUnsupported(_SPANNING)


class ClusterPreparer(Preparer):
    """:class:`Preparer` of a queue on a Redis Cluster: the queue's name becomes its tag, the id starts
    with it; a dependency on a job of another queue and any rate or flow limit are refused."""

    ids = CLUSTER_JOB_ID

    def _identify(self, o: EnqueueOptions) -> tuple[str, str, bool]:
        qname = cluster_tag(o.queue or self.default_queue, True)
        if o.rate_limit is not None or o.max_concurrency is not None or o.concurrency_key is not None:
            raise ClusterUnsupported(_SPANNING)
        if o.depends_on is not None:
            deps = [o.depends_on] if isinstance(o.depends_on, str) else list(o.depends_on)
            # an id without a tag is no cluster job id at all: refused as such, with the other options
            other = [d for d in deps if id_tag(str(d)) not in ("", qname)]
            if other:
                raise ClusterUnsupported(
                    f"depends_on {other[0]!r}: a job of another queue than {qname} (on a Redis Cluster a "
                    "job can only depend on jobs of its own queue: one hash slot per queue)"
                )
        if o.job_id is None:
            if o.unique:
                raise InvalidJob("unique=True needs a job_id")
            return qname, qname + uuid4_text(), True
        plain = o.job_id[len(qname) :] if o.job_id.startswith(qname) else o.job_id
        if not JOB_ID.match(plain):
            raise InvalidJob(f"job id {o.job_id!r} may only contain letters, digits, '_' and '-' (RQ's rule)")
        return qname, qname + plain, False


def cluster_calls(
    keys: RQKeys, maxlen: int, parts: Sequence[Part], batch: int
) -> list[tuple[list[int], EnqueueCall]]:
    """``parts`` as enqueue calls of one queue each (at most ``batch`` jobs a call), with the indices of the
    parts each call writes, in order. A part's header starts with its queue's name in Redis."""
    by_queue: dict[str, list[int]] = {}
    for i, (header, _) in enumerate(parts):
        by_queue.setdefault(header[0], []).append(i)
    out: list[tuple[list[int], EnqueueCall]] = []
    p = keys.prefix
    for q, indices in by_queue.items():
        stream, registry = lifecycle_stream(p, q, cluster=True), queue_registered(p, q)
        for k in range(0, len(indices), batch):
            chunk = indices[k : k + batch]
            call = EnqueueCall(keys, stream, maxlen, segments([parts[i] for i in chunk]), registry)
            out.append((chunk, call))
    return out


def stream_of_job(prefix: str, job_id: str) -> str:
    """The lifecycle stream of a cluster job's queue (from the tag its id starts with)."""
    tag = id_tag(job_id)
    if not tag:
        raise JobNotFound(f"no job {job_id!r} (a job id on a Redis Cluster starts with its queue's tag)")
    return lifecycle_stream(prefix, tag, cluster=True)


def in_order(n: int, written: Sequence[tuple[list[int], list[Reply]]]) -> list[Reply]:
    """Per-call replies (``(indices, reply)``) as one reply per part, in the parts' order."""
    out: list[Reply] = [None] * n
    for indices, reply in written:
        for i, r in zip(indices, reply, strict=True):
            out[i] = r
    return out


Row = tuple[str, dict[str, str], list[str]]
_COUNTERS = ("successful_job_count", "failed_job_count", "total_working_time")


async def fold_aliases(redis: aioredis.Redis, keys: RQKeys, rows: list[Row]) -> list[Row]:
    """Workers as ``rq info`` shows them, on a cluster: a worker's registration (``rows``: name, hash,
    current jobs) with what its scripts write under its alias in each queue's slot (``{q}<name>``: the
    running executions, ``busy``, the job counters) folded in, and its queues without their tags."""
    if not rows:
        return rows
    aliases = [[worker_alias(name, q) for q in h.get("queues", "").split(",") if q] for name, h, _ in rows]
    pipeline: Any = redis.pipeline(transaction=False)  # (its queueing methods return the pipeline)
    async with pipeline as pipe:
        for alias in (a for group in aliases for a in group):
            pipe.hgetall(keys.worker(alias))
            pipe.smembers(keys.worker_executions(alias))
        replies = iter(await pipe.execute())
    out: list[Row] = []
    for (name, h, current), group in zip(rows, aliases, strict=True):
        h, jobs = dict(h), set(current)
        for _ in group:
            raw, executions = next(replies), next(replies)
            lane = {a.decode(): b.decode(errors="replace") for a, b in raw.items()}
            jobs |= {e.decode().split(":", 1)[0] for e in executions}
            for counter in _COUNTERS:
                total = float(h.get(counter) or 0) + float(lane.get(counter) or 0)
                h[counter] = str(total if counter == "total_working_time" else int(total))
            if lane.get("state") == "busy" and h.get("state") != "suspended":
                h["state"] = "busy"
        h["queues"] = ",".join(str(untagged(q)) for q in h.get("queues", "").split(",") if q)
        out.append((name, h, sorted(jobs)))
    return out
