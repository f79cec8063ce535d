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
    sample = (ROOT / "data" / "cdnow" / "CDNOW_sample.csv").read_text().splitlines()
    rows = [line for line in sample[1:] if line.split(",")[1] < "0300"]  # 299 customers
    log = tmp_path / "purchases.csv"
    log.write_text("\n".join([sample[0], *rows]) + "\n")
    env = pulse_env(
        broker.bootstrap, f"eval{tmp_path.name[-6:]}.", f"eval-{tmp_path.name}", tmp_path / "d"
    )
    args = ["evaluate", "--transactions", str(log), "--amount-column", "dollar_value"]
    args += ["--cutoff", "1997-09-30", "--holdout-days", "273", "--churn-window-days", "90"]
    result = run_pulse([*args, "--partitions", "2", "--json"], env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    report = json.loads(out[out.index("{\n") :])
    assert report["source"] == "pipeline" and report["members"] == 295
    # every member's score came back from member_scores in ClickHouse
    read_back = re.search(r"scores read back from ClickHouse for ([\d,]+) members", out)
    assert read_back is not None and int(read_back.group(1).replace(",", "")) == 295
    assert report["model"]["auc"] > 0.6 and report["recency"]["auc"] > 0.6
    assert 0.0 < report["model"]["mean"] < 1.0
