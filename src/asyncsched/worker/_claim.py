"""Claiming: the claim script (``claim.lua``) run for a batch, or pipelined behind a blocking pop, and its
reply turned into jobs for the executor; queues refused by Redis are backed off (``_guard.QueueBackoff``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from redis.exceptions import ResponseError

from .._keys import claiming_list, paused_queue
from .._redis.connection import Line
from ..events._poison import report_malformed
from ..exceptions import RedisRefused
from ..rq._calls import ClaimCall, ClaimReply
from ._guard import QueueBackoff
from ._job import ClaimedJob
from ._state import Shared

__all__ = ["Claimer"]

log = logging.getLogger("asyncsched.worker")


class Claimer:
    """Marks jobs started for this worker and hands them to ``dispatch``.

    With one queue on a real Redis, an idle worker BLMOVEs into its own claiming list with the claim script
    pipelined behind it (on the claim loop's own connection, :class:`Line`)."""

    def __init__(self, w: Shared, dispatch: Callable[[ClaimedJob], None]) -> None:
        cfg = self.cfg = w.cfg
        self.redis = self._r = w.redis
        self.scripts, self.limits, self.keys = w.scripts, w.limits, w.keys
        self.dispatch = dispatch
        self.queues = list(cfg.queues)
        self.paused = QueueBackoff(cfg.name)
        self.suspended = False  # RQ's suspension key was seen by the last claim
        self.line = Line(w.redis) if Line.supported(w.redis) else None
        self.pipelined = len(cfg.queues) == 1 and self.line is not None
        self.claiming = claiming_list(cfg.prefix, cfg.name)
        self._exec_base = os.urandom(10).hex()
        self._exec_seq = 0  # the next execution number: ids are base + %012x, made by the claim script

    async def aclose(self) -> None:
        if self.line is not None:
            with contextlib.suppress(Exception):
                await self.line.aclose()

    async def claim(self, n: int, *, given: list[str] | None = None, given_queue: str = "") -> int:
        """Claim up to ``n`` jobs from the queues (and the ``given`` ids, popped from ``given_queue``)."""
        given = given or []
        if n <= 0 and not given:
            return 0
        return self.take(await self.scripts.call(self.call(n, given, given_queue), self.line))

    def call(self, n: int, given: list[str], given_queue: str, *, use_claiming: bool = False) -> ClaimCall:
        """One ``claim.lua`` call: up to ``n`` jobs of the active queues, after the ``given`` ids popped from
        ``given_queue`` (and, with ``use_claiming``, those in this worker's claiming list)."""
        # reserve the execution numbers this call may use (gaps are harmless; reuse would not be)
        first_exec = self._exec_seq
        self._exec_seq += n + len(given)
        cfg = self.cfg
        return ClaimCall(
            self.keys,
            cfg.name,
            cfg.stream,
            # No clock of ours: the script reads Redis' when it runs. A start (started_at, and the moment a
            # rate limit counts) is then never dated before the script ran, nor before a job let go by a
            # rate window (limits.lua) was let go, whatever this process' clock or a stall between here
            # and the script (every worker shares one clock, so a window never holds one start too many).
            "",
            "",
            cfg.lease,
            n,
            cfg.lifecycle_maxlen,
            given_queue,
            use_claiming,
            given,
            self.paused.active(self.queues) if n > 0 else [],
            self._exec_base,
            first_exec,
        )

    async def block(self, n: int) -> int:
        """Wait (without polling) for a job to be pushed, then claim it and up to ``n - 1`` more.

        With one queue on a real Redis, the claim script is pipelined right behind a BLMOVE into this
        worker's own claiming list, so the job is started in the same round trip that delivers it. The
        claim cannot be abandoned half way: if this task is cancelled meanwhile, the replies are still
        read (``Line.collect``) and what it claimed is taken (at shutdown, put back like any running job).
        """
        timeout = max(1, round(self.cfg.poll_timeout))
        queues = await self._unpaused(self.paused.active(self.queues))
        if not queues:  # all paused: look again after the poll timeout (or at stop)
            return -1
        if self.pipelined:
            return await self._block_pipelined(n, timeout)
        try:
            popped = await self._r.blpop([self.keys.queue(q) for q in queues], timeout=timeout)
        except ResponseError as exc:  # a queue key of the wrong type: find it and pause it
            await self._pause_refused(queues, exc)
            return 0
        if popped is None:
            return 0
        key, job_id = popped
        return await self.claim(n - 1, given=[job_id.decode()], given_queue=self.keys.queue_name(key))

    async def _block_pipelined(self, n: int, seconds: int) -> int:
        assert self.line is not None
        q = self.cfg.queues[0]
        call = self.call(n, [], q, use_claiming=True)
        keys, args = call.to_keys(), call.to_args()
        blmove = ("BLMOVE", self.keys.queue(q), self.claiming, "LEFT", "RIGHT", seconds)
        claim = self.scripts.command(call.SCRIPT, args, keys)
        try:
            moved, reply = await self.line.execute(blmove, claim, blocking=seconds)
        except asyncio.CancelledError:
            # the claim may have run: read what it did and take it (at shutdown: put it back)
            with contextlib.suppress(Exception):
                late = await self.line.collect()
                if len(late) == 2 and isinstance(late[1], list):
                    self.take(call.parse(late[1]))
            raise
        if isinstance(reply, Exception):  # NOSCRIPT: loaded and run again (another error is raised)
            reply = await self.scripts.settle(call.SCRIPT, reply, args, keys)
        taken = self.take(call.parse(reply))
        if isinstance(moved, Exception):  # refused at once, so it would spin: pause the queue
            self.paused.failed(q, f"BLMOVE: {moved}")
        return taken

    async def _unpaused(self, queues: list[str]) -> list[str]:
        """Those of ``queues`` no operator paused (``TaskQueue.pause``), checked before blocking: a blocking
        pop would take a paused queue's job, which the claim script then puts back."""
        if not queues:
            return []
        flags = await self._r.mget([paused_queue(self.cfg.prefix, q) for q in queues])
        return [q for q, flag in zip(queues, flags, strict=True) if flag is None]

    async def _pause_refused(self, queues: list[str], exc: Exception) -> None:
        """Pause the queues whose list key is not a list (``exc`` came from a command over all of them)."""
        async with self._r.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.type(self.keys.queue(q))
            types = await pipe.execute(raise_on_error=False)
        bad = [q for q, t in zip(queues, types, strict=True) if t not in (b"list", b"none", "list", "none")]
        for q in bad or queues:
            self.paused.failed(q, exc)

    async def queues_empty(self) -> bool:
        """Nothing to claim: every queue empty, paused by an operator, or backed off after errors."""
        queues = self.paused.active(self.queues)
        async with self._r.pipeline(transaction=False) as pipe:
            for q in queues:
                pipe.llen(self.keys.queue(q))
                pipe.exists(paused_queue(self.cfg.prefix, q))
            replies = await pipe.execute(raise_on_error=False)
        lengths, paused = replies[::2], replies[1::2]
        for q, length in zip(queues, lengths, strict=True):
            if isinstance(length, Exception):
                self.paused.failed(q, length)
        return not any(
            n for n, off in zip(lengths, paused, strict=True) if not isinstance(n, Exception) and off == 0
        )

    def take(self, reply: ClaimReply) -> int:
        """Start the jobs a claim script returned; how many. Entries of refused jobs and queues (an error
        text in place of the hash; see claim.lua) are reported and skipped."""
        if len(reply) == 1:  # {'suspended'}: rq suspend / asyncsched suspend
            if not self.suspended:
                self.suspended = True
                log.warning("worker %s: suspended (rq resume / asyncsched resume to go on)", self.cfg.name)
            return 0
        count = 0
        ok_queues: set[str] = set()
        refused_queues: set[str] = set()
        for i in range(len(reply) // 4):
            job_id, exec_id, queue, flat = reply[4 * i : 4 * i + 4]
            if isinstance(job_id, list) or isinstance(exec_id, list) or isinstance(queue, list):
                entry = reply[4 * i : 4 * i + 4]
                raise RedisRefused(
                    f"unexpected reply from claim.lua: {entry!r:.200} (expected id, exec, queue, hash)"
                )
            if exec_id == b"limited" and isinstance(flat, bytes):  # a job waits for a rate limit: let it go
                self.limits.wake(float(flat))  # when a start frees
                continue
            q = queue.decode(errors="replace")
            if isinstance(flat, bytes):
                reason = flat.decode(errors="replace")
                if job_id:
                    why = f"{reason} (skipped and removed from the queue)"
                    report_malformed("job", f"queue {q}", why, job_id, log)
                else:
                    refused_queues.add(q)
                    self.paused.failed(q, reason)
                continue
            h = {flat[k].decode(): flat[k + 1] for k in range(0, len(flat), 2)}
            self.dispatch(ClaimedJob(job_id.decode(), exec_id.decode(), q, h))
            ok_queues.add(q)
            count += 1
        if ok_queues:
            self.paused.succeeded(ok_queues - refused_queues)
        return count
