"""``examples/grafana/asyncsched-dashboard.json`` is valid and queries only series asyncsched exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from asyncsched import _metrics
from asyncsched.web import _metrics as web_metrics

ROOT = Path(__file__).resolve().parents[2]


def test_grafana_dashboard_names_only_exported_series() -> None:
    dashboard = json.loads((ROOT / "examples/grafana/asyncsched-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 8
    names = {re.sub(r"_(bucket|sum|count)$", "", n) for e in exprs for n in re.findall(r"asyncsched_\w+", e)}
    exported = Path(_metrics.__file__).read_text() + Path(web_metrics.__file__).read_text()
    missing = sorted(n for n in names if f'"{n}"' not in exported and f"``{n}" not in exported)
    assert missing == []
    assert {"asyncsched_job_wait_seconds", "asyncsched_scheduler_tick_lag_seconds"} <= names
    assert {"asyncsched_rate_limit_waits_total", "asyncsched_event_delivery_lag_seconds"} <= names
