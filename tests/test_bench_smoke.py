"""The benchmark harness runs end to end on asyncsched and its correctness check passes (not its speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    assert (tmp_path / result_file.name.replace(".json", ".md")).exists()
