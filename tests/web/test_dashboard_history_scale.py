"""``benchmarks/dashboard_history.py`` runs end to end on a small history (the 100,000-row figure in
docs/operations.md comes from the same script): rows bulk-inserted, the dashboard pages, filters and opens
a job that exists only in the history (expired from Redis), in headless Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dashboard_history_benchmark_on_a_small_history(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dashboard_history.py"), "--db", "sqlite", "--n", "2000",
         "--repeat", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=280, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["n"] == 2000
    for key in ("page_load_ms", "next_page_ms", "last_page_ms", "filter_ms", "job_detail_ms"):
        assert 0 < result[key] < 60_000, (key, result[key])
