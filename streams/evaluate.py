"""``pulse evaluate``: churn and conversion quality against the simulator's ground truth.

Simulates a community, cuts it at ``days - 90`` (the conversion window must fit
after the cutoff), scores members at the cutoff, and compares with what the
simulated members did afterwards, next to a recency-only and an RFM baseline
computed on the same members (see :mod:`scoring.evaluation`).

The scoring engine runs in-process here: the same computation the pipeline's
scoring stage runs, without the I/O. Running the 20,000-member evaluation
through the broker and ClickHouse (``pulse replay`` of the simulated file) is
the next step; at the pipeline's current throughput it takes about an hour.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from scoring.config import ScoringConfig
from scoring.evaluation import evaluate_offline
from streams.simulator import SimulationConfig, ground_truth, simulate

__all__ = ["run_evaluation"]


def _config(args: argparse.Namespace) -> SimulationConfig:
    start = datetime(2026, 1, 1, tzinfo=UTC)  # fixed: the same seed gives the same figures
    return SimulationConfig(members=args.members, days=args.days, seed=args.seed, start=start)


def _print(report: dict[str, Any], elapsed: float) -> None:
    churn, conversion = report["churn"], report["conversion"]
    print(f"cutoff {report['cutoff']}, {report['events_replayed']:,} events scored")
    print(
        f"churn       members {churn['population']:>7,}  positives {churn['positives']:>6,}  "
        f"AUC model {churn['auc_model']:.3f}  recency {churn['auc_recency']:.3f}  "
        f"RFM {churn['auc_rfm']:.3f}  "
        f"(model - recency {churn['auc_model'] - churn['auc_recency']:+.3f})"
    )
    print(
        f"conversion  members {conversion['population']:>7,}  "
        f"positives {conversion['positives']:>6,}  "
        f"AUC model {conversion['auc_model']:.3f}  recency {conversion['auc_recency']:.3f}  "
        f"RFM {conversion['auc_rfm']:.3f}"
    )
    print(f"churn calibration error (ECE, 10 bins) {churn['calibration_error']:.3f}")
    for row in churn.get("calibration", []):
        print(f"  {json.dumps(row)}")
    print(f"evaluated in {elapsed:.0f}s")


def run_evaluation(args: argparse.Namespace) -> int:
    config = _config(args)
    started = time.monotonic()
    assert config.start is not None
    cutoff: datetime = config.start + timedelta(days=config.days - 90)
    print(
        f"simulating {config.members:,} members over {config.days} days (seed {config.seed}); "
        f"cutoff {cutoff.date()}",
        flush=True,
    )
    scoring = ScoringConfig(seed=config.seed)
    report = evaluate_offline(simulate(config), ground_truth(config), cutoff, scoring)
    _print(report, time.monotonic() - started)
    return 0
