"""`pulse evaluate --transactions` through the real pipeline: broker, worker, ClickHouse."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import ROOT, pulse_env, run_pulse

from streams.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def test_a_real_purchase_log_is_scored_through_the_pipeline(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    # the paper's 1-in-10 sample: 2,357 customers, enough that each of two partitions
    # has purchases on most days (a partition's clock moves with its own events)
    log = ROOT / "data" / "cdnow" / "CDNOW_sample.csv"
    env = pulse_env(
        broker.bootstrap, f"eval{tmp_path.name[-6:]}.", f"eval-{tmp_path.name}", tmp_path / "d"
    )
    args = ["evaluate", "--transactions", str(log), "--amount-column", "dollar_value"]
    args += ["--cutoff", "1997-09-30", "--holdout-days", "273", "--churn-window-days", "90"]
    result = run_pulse([*args, "--partitions", "2", "--json"], env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    report = json.loads(out[out.index("{\n") :])
    assert report["source"] == "pipeline" and report["members"] == 2349
    # every member's score came back from member_scores in ClickHouse
    read_back = re.search(r"scores read back from ClickHouse for ([\d,]+) members", out)
    assert read_back is not None and int(read_back.group(1).replace(",", "")) == 2349
    assert report["model"]["auc"] > 0.6 and report["recency"]["auc"] > 0.6
    assert 0.0 < report["model"]["mean"] < 1.0

    # A purchase log is an inactive community: at the cutoff most customers have been
    # silent for months. Every latest score is still current: one model version per
    # task (each task has its own models), at most a day older than the newest event.
    current = report["current_scores"]  # read from member_scores_current
    tasks = current["tasks"]
    assert sum(t["members"] for t in tasks) == 2349 and len(tasks) == 2
    for t in tasks:
        assert t["model_versions"] == 1, t
        assert 0.0 <= t["oldest_score_days"] <= 1.0, (t, current["newest_event_at"])
        assert t["not_current"] == 0, t
        assert t["from_daily_batch"] > 0.9 * t["members"], t  # the silent: the daily batch
