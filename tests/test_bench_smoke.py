"""The benchmark harness runs end to end on asyncsched and its correctness check passes (not its speed)."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_quick_asyncsched_w1_w2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--libs",
            "asyncsched",
            "--only",
            "W1,W2",
            "--out",
            str(tmp_path),
            "--no-docs",
        ],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result_file,) = tmp_path.glob("*-quick-*.json")  # a partial run: named after its workloads and libs
    doc = json.loads(result_file.read_text())
    runs = doc["results"]["asyncsched"]
    assert set(runs) == {"W2", "W1bulk"}
    drain = runs["W2"][0]
    assert drain["valid"], drain
    # every job ran exactly once
    assert drain["executions"] == drain["unique"] == drain["n"] > 0
    assert drain["missing"] == drain["duplicates"] == 0
    bulk = runs["W1bulk"][0]
    assert bulk["valid"], bulk
    assert bulk["queued"] == bulk["n"]
    assert bulk["executions"] == bulk["unique"] == bulk["n"]  # and a worker ran each exactly once
    assert bulk["missing"] == bulk["duplicates"] == 0
    assert (tmp_path / result_file.name.replace(".json", ".md")).exists()


def _bench_module(name: str) -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _rows(*ids: int) -> list[tuple[int, float, float, float]]:
    return [(i, 1.0, 2.0, 0.5) for i in ids]


def test_check_is_valid_only_when_each_job_ran_exactly_once() -> None:
    check = _bench_module("_common").check
    assert check(_rows(0, 1, 2), {0, 1, 2})["valid"]
    duplicate = check(_rows(0, 1, 1, 2), {0, 1, 2})
    assert not duplicate["valid"]
    assert (duplicate["duplicates"], duplicate["missing"]) == (1, 0)
    missing = check(_rows(0, 2), {0, 1, 2})
    assert not missing["valid"]
    assert (missing["duplicates"], missing["missing"]) == (0, 1)
    both = check(_rows(0, 0, 2), {0, 1, 2})  # as many executions as jobs, yet one ran twice, one never
    assert not both["valid"]
    assert (both["duplicates"], both["missing"]) == (1, 1)
    assert not check(_rows(0, 1, 7), {0, 1, 2})["valid"]  # a job that was never enqueued


def test_w6_check_counts_double_claims_missing_and_unclaimed_ticks() -> None:
    check_ticks = _bench_module("w6_scheduler").check_ticks
    due = {100: 2, 101: 1}
    jobs = [("a", 100), ("b", 100), ("c", 101), ("z", 99)]  # 99: outside the window, ignored
    claims = [("a", 100), ("b", 100), ("c", 101)]
    assert check_ticks(jobs, claims, due)["valid"]
    twice = check_ticks(jobs, [*claims, ("b", 100)], due)  # a replica claimed b's tick again
    assert not twice["valid"]
    assert twice["duplicates"] == 1
    assert "claimed more than once" in twice["error"]
    lost = check_ticks(jobs[1:], claims, due)
    assert not lost["valid"]
    assert lost["missing"] == 1
    unclaimed = check_ticks(jobs, claims[:2], due)
    assert not unclaimed["valid"]
    assert unclaimed["unclaimed"] == 1
    extra = check_ticks([*jobs, ("d", 101)], [*claims, ("d", 101)], due)
    assert not extra["valid"]
    assert extra["extra"] == 1


FAKE_WORKER = """
import os, time
ids = [int(x) for x in os.environ["FAKE_IDS"].split(",")]
with open(os.environ["BENCH_LOG"], "a") as fh:
    for i in ids:
        fh.write(f"{i} {time.time():.6f} {time.time():.6f} 0.0\\n")
"""


@pytest.mark.parametrize(
    ("ran", "valid"), [("0,1,2", True), ("0,1,1,2", False), ("0,0,2", False), ("0,2", False)]
)
def test_w1_bulk_is_valid_only_when_its_jobs_each_run_once(
    real_redis_url: str, tmp_path: Path, ran: str, valid: bool
) -> None:
    common = _bench_module("_common")

    class Fake(common.Adapter):  # type: ignore[misc,name-defined]
        name = "fake"

        async def enqueue_bulk(self, func: str, n: int) -> None:
            pass

        async def queued(self) -> int:
            return 3  # the count alone says all is well

        def worker_cmd(self, workload: str) -> list[str]:
            return [sys.executable, "-c", FAKE_WORKER]

        def worker_env(self, workload: str) -> dict[str, str]:
            return {"FAKE_IDS": ran}

    opts = argparse.Namespace(concurrency=1)
    result = common.run_bulk(Fake(real_redis_url, opts), 3, str(tmp_path))
    assert result["valid"] is valid, result
    assert result["queued"] == 3
