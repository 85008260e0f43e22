"""Real processes on a real redis-server: three ``asyncsched scheduler`` replicas beside a running
``rqscheduler`` fire each rq-scheduler job once; cron strings follow the process's local time as
rqscheduler's do."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis as syncredis
from rq_scheduler import Scheduler

from asyncsched import _keys
from asyncsched._lifecycle import unpack

ROOT = Path(__file__).resolve().parents[2]
SET = "rq:scheduler:scheduled_jobs"


def _wait(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextmanager
def processes(cmds: list[list[str]], env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for cmd in cmds
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # never leave a process behind
                proc.kill()
                proc.communicate()


class Consumer(threading.Thread):
    """A stand-in worker: pops each enqueued id at once, notes when, marks the job finished."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.client = syncredis.Redis.from_url(url)
        self.pops: list[tuple[str, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            item = self.client.blpop(["rq:queue:default"], timeout=0.1)
            if item:
                job_id = item[1].decode()
                self.pops.append((job_id, time.monotonic()))
                self.client.hset(f"rq:job:{job_id}", "status", "finished")

    def runs(self, job_id: str) -> list[float]:
        return [t for j, t in self.pops if j == job_id]


def scheduler_cmd() -> list[str]:
    return [sys.executable, "-m", "asyncsched", "scheduler", "--no-history", "--no-events"]


@pytest.mark.slow
def test_three_replicas_beside_rqscheduler_fire_each_job_once(real_redis_url: str, tmp_path: Path) -> None:
    conn = syncredis.Redis.from_url(real_redis_url)
    s = Scheduler(connection=conn)
    now = datetime.utcnow()
    s.schedule(now, "tests.jobs.add", args=[1, 2], interval=2, id="every-2s")
    s.schedule(now, "tests.jobs.add", args=[1, 2], interval=1, repeat=6, id="every-1s-x6")
    s.schedule(now + timedelta(seconds=3), "tests.jobs.add", args=[1, 2], interval=3, repeat=3, id="x3")
    s.cron("* * * * * * *", "tests.jobs.add", args=[1, 2], repeat=8, id="cron-each-second-x8")
    for k in range(1, 13):
        s.enqueue_at(now + timedelta(seconds=k), "tests.jobs.add", 1, k, job_id=f"once-{k}")
    env = {
        **os.environ,
        "REDIS_URL": real_redis_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/sched.db",
        "ASYNCSCHED_LOG_LEVEL": "INFO",
    }
    rqscheduler = [sys.executable, "-m", "rq_scheduler.scripts.rqscheduler", "--url", real_redis_url]
    consumer = Consumer(real_redis_url)
    consumer.start()
    try:
        with processes([[*rqscheduler, "-i", "0.3"]], env) as [rq_proc]:
            _wait(lambda: len(consumer.pops) >= 4, what="rqscheduler firing alone")
            alone = len(consumer.pops)
            with processes([scheduler_cmd()] * 3, env) as ours:
                _wait(lambda: len(consumer.pops) >= alone + 12, what="the mixed fleet firing")
                rq_proc.send_signal(signal.SIGTERM)  # rqscheduler leaves; our replicas carry on
                rq_proc.wait(timeout=30)
                ours[0].send_signal(signal.SIGKILL)  # and one of ours dies
                _wait(lambda: conn.zcard(SET) == 1, timeout=60, what="every finite job done")
        assert rq_proc.returncode is not None
    finally:
        consumer.stopping.set()
        consumer.join()
    records = [unpack(f) for _id, f in conn.xrange(_keys.lifecycle_stream("rq"))]  # (either format)
    ours_fired = {f["job_id"] for f in records if f.get("agent_name") == "rq-scheduler"}
    conn.close()
    assert alone >= 4  # rqscheduler fired some jobs itself before our replicas came
    assert ours_fired  # and ours fired the rest
    for k in range(1, 13):
        assert len(consumer.runs(f"once-{k}")) == 1, f"once-{k}"
    assert len(consumer.runs("every-1s-x6")) == 6
    assert len(consumer.runs("x3")) == 3
    assert len(consumer.runs("cron-each-second-x8")) == 8
    # Repeat counts above catch a double fire (two firers count down from the same value). For intervals of
    # 2 s and more so do the gaps: consecutive runs of one job are more than (interval - 1) s apart (a run at
    # t reschedules to floor(t) + interval), a double fire ~0 s apart; 0.2 s is left for the consumer.
    for job_id, interval in (("every-2s", 2), ("x3", 3)):
        times = consumer.runs(job_id)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g > interval - 1.2 for g in gaps), (job_id, gaps)


TZ_SNIPPET = """
import sys, warnings
warnings.simplefilter("ignore")
from rq_scheduler.utils import get_next_scheduled_time, to_unix
print(to_unix(get_next_scheduled_time(sys.argv[1], use_local_timezone=sys.argv[2] == "1")))
"""


def rq_schedulers_next(cron: str, local: bool, tz: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", TZ_SNIPPET, cron, "1" if local else "0"],
        env={**os.environ, "TZ": tz},
        capture_output=True,
        check=True,
    )
    return int(out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tz", "local"), [("UTC", False), ("Asia/Kolkata", True), ("America/New_York", False)]
)
def test_cron_follows_the_local_time_as_rqscheduler_does(
    real_redis_url: str, tmp_path: Path, tz: str, local: bool
) -> None:
    """After a run, the next run is what rqscheduler computes in a process with the same TZ."""
    conn = syncredis.Redis.from_url(real_redis_url)
    Scheduler(connection=conn).cron(
        "0 9 * * *", "tests.jobs.add", args=[1, 2], id="nine", use_local_timezone=local
    )
    conn.zadd(SET, {"nine": int(time.time())})  # its time has come
    env = {
        **os.environ,
        "REDIS_URL": real_redis_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/sched.db",
        "TZ": tz,
    }
    with processes([scheduler_cmd()], env):
        _wait(lambda: conn.llen("rq:queue:default") == 1, what="the cron job fired")
    expected = rq_schedulers_next("0 9 * * *", local, tz)
    assert conn.zscore(SET, "nine") == expected
    wall = datetime.fromtimestamp(expected, ZoneInfo(tz))
    assert (wall.hour, wall.minute) == (9, 0)  # 09:00 on the wall clock of the process's zone
    conn.close()
