"""The jobs a worker holds: claimed and not yet recorded. Their slots, their outcomes on the way to the
completer, stopping one on request, and the drain at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ._job import ClaimedJob, Outcome, put_back, stopped

__all__ = ["Running"]

log = logging.getLogger("asyncsched.worker")


class Running:
    """The in-flight table. A job is *executing* from dispatch until its function returns (its slot then
    frees, so the next claim overlaps the recording of the last outcomes), and *held* until its outcome is
    recorded; at most ``concurrency`` outcomes wait to be recorded beside the executing jobs."""

    def __init__(self, concurrency: int, threads: int) -> None:
        self.concurrency = concurrency
        self.threads = threads
        # claimed and not yet recorded (running, or finished with the outcome on its way to Redis)
        self.jobs: dict[str, tuple[ClaimedJob, asyncio.Task[None] | None]] = {}
        self.executing = 0  # of which still running (a slot frees when its function returns)
        self.sync_running = 0
        self.sync_seen = False
        self.done: asyncio.Queue[Outcome | None] = asyncio.Queue()  # outcomes for the completer
        self.slot = asyncio.Event()  # set when a slot frees (or a stop is requested)

    def __len__(self) -> int:
        return len(self.jobs)

    def idle(self) -> bool:
        """Nothing held and no outcome waiting."""
        return not self.jobs and self.done.empty()

    def capacity(self) -> int:
        """How many more jobs may be claimed now."""
        free = min(self.concurrency - self.executing, 2 * self.concurrency - len(self.jobs))
        if self.sync_seen:
            free = min(free, self.threads - self.sync_running)
        return max(free, 0)

    async def wait_slot(self, limit: float | None = None) -> None:
        self.slot.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self.slot.wait()

    def refused(self, job: ClaimedJob, outcome: Outcome) -> None:
        """A claimed job that is not run (refused, malformed): its outcome goes straight to the completer."""
        self.jobs[job.id] = (job, None)
        self.done.put_nowait(outcome)

    def started(self, job: ClaimedJob, task: asyncio.Task[None]) -> None:
        if not job.is_async:
            self.sync_running += 1
            self.sync_seen = True
        self.executing += 1
        self.jobs[job.id] = (job, task)

    def returned(self, job: ClaimedJob, outcome: Outcome) -> None:
        """A dispatched job's function is done (once per job): free its slot, queue its outcome."""
        self.executing -= 1
        if not job.is_async:
            self.sync_running -= 1
        self.slot.set()
        self.done.put_nowait(outcome)

    def recorded(self, batch: list[Outcome]) -> None:
        """The completer recorded ``batch``: those jobs are no longer held."""
        for o in batch:
            entry = self.jobs.get(o.job.id)
            # the same job may be held again already (retried or requeued at once and claimed while this
            # outcome was being recorded): only the recorded execution leaves the table
            if entry is not None and entry[0] is o.job:
                del self.jobs[o.job.id]
            log.debug("job %s: %s", o.job.id, o.kind)
        self.slot.set()

    def stop_job(self, job_id: str, *, reason: str) -> None:
        """Stop a running job (RQ's stop-job, a cancel, a lost lease); its outcome is ``stopped``."""
        entry = self.jobs.get(job_id)
        if entry is None or entry[1] is None or entry[0].stop_reason is not None:
            return
        if entry[1].done():  # it returned; its outcome is being recorded (the heartbeat saw it finish)
            return
        job, task = entry
        assert task is not None
        log.info("job %s: stopping (%s)", job_id, reason)
        job.stop_reason = "stopped"
        self.cancel(job, task)

    def cancel(self, job: ClaimedJob, task: asyncio.Task[None]) -> None:
        """Cancel a job's task (and set its cancel token: a sync job's thread runs on). A task cancelled
        before its first step never reaches the executor's handler, so its outcome is recorded here
        instead (else the job would stay started forever)."""
        if job.context is not None:
            job.context.cancel()
        task.cancel()

        def never_started(done: asyncio.Task[None]) -> None:
            if done.cancelled():
                self.returned(job, put_back(job) if job.stop_reason == "shutdown" else stopped(job))

        task.add_done_callback(never_started)

    async def drain(self, grace: float) -> None:
        """Give running jobs ``grace`` seconds, put the rest back (``shutdown``), and wait (30 s at most)
        for the completer to record every outcome."""
        deadline = time.monotonic() + grace
        while self.jobs and time.monotonic() < deadline:
            await self.wait_slot(max(deadline - time.monotonic(), 0.01))
        for job, task in list(self.jobs.values()):
            if task is not None and not task.done() and job.stop_reason is None:
                job.stop_reason = "shutdown"
                self.cancel(job, task)
        tasks = [t for _, t in self.jobs.values() if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        end = time.monotonic() + 30
        while self.jobs and time.monotonic() < end:  # the completer records what is left
            await self.wait_slot(0.2)
