"""``pulse evaluate``: churn and conversion quality against the simulator's ground truth.

Simulates a community, cuts it at ``days - 90`` (the conversion window must fit
after the cutoff), scores members at the cutoff, and compares with what the
simulated members did afterwards, next to a recency-only and an RFM baseline
computed on the same members (see :mod:`scoring.evaluation`).

By default the events up to the cutoff go through the real pipeline (embedded
broker, Faust worker, scoring stage, ClickHouse in a temporary data dir) and
the model column is read back from ``member_scores``: each member's latest
score, as production serves it (for a silent member, its latest silence
re-score). ``--no-pipeline`` runs the same engine in-process (minutes
instead of tens of minutes at 20,000 members). Labels and baselines are
computed from the simulated events either way.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from scoring.config import ScoringConfig
from scoring.evaluation import evaluate_offline
from streams.config import Settings
from streams.simulator import SimulationConfig, ground_truth, simulate

__all__ = ["run_evaluation"]


def _config(args: argparse.Namespace) -> SimulationConfig:
    start = datetime(2026, 1, 1, tzinfo=UTC)  # fixed: the same seed gives the same figures
    return SimulationConfig(members=args.members, days=args.days, seed=args.seed, start=start)


def _print(report: dict[str, Any], elapsed: float) -> None:
    churn, conversion = report["churn"], report["conversion"]
    print(
        f"cutoff {report['cutoff']}, {report['events_replayed']:,} events; "
        f"model scores from the {report['source']}"
    )
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
    served = None
    if args.pipeline:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="pulse-evaluate-") as tmp:
            settings = Settings.from_env().with_(data_dir=tmp, metrics_port=0)
            served = _served_by_pipeline(config, cutoff, settings)
        print(f"scores read back from ClickHouse for {len(served):,} members", flush=True)
    report = evaluate_offline(simulate(config), ground_truth(config), cutoff, scoring, served)
    report["source"] = "pipeline" if served is not None else "in-process engine"
    _print(report, time.monotonic() - started)
    return 0


def _served_by_pipeline(
    config: SimulationConfig, cutoff: datetime, settings: Settings
) -> dict[str, tuple[float, float | None]]:
    """Publish the events up to ``cutoff`` through the real pipeline; read back the scores."""
    from streams.replay import Publisher, wait_until
    from streams.runtime import Runtime

    lines = (
        json.dumps(e, separators=(",", ":")).encode()
        for e in simulate(config)
        if datetime.fromisoformat(e["occurred_at"]) <= cutoff
    )
    members = [str(t["member_id"]) for t in ground_truth(config)]
    with Runtime(settings, serve_http=False, announce=False) as runtime:
        started = time.monotonic()
        publisher = Publisher(runtime.bootstrap, settings.topic_prefix)
        report = publisher.publish_lines(lines)
        print(
            f"published {report.published:,} events; the pipeline is scoring them ...", flush=True
        )
        targets = dict(report.last_offsets)

        def progress() -> None:
            if int(time.monotonic()) % 30 == 0:
                processed = runtime.status()["processed"]
                rate = processed / max(1.0, time.monotonic() - started)
                print(f"  processed {processed:,} ({rate:,.0f}/s)", flush=True)

        wait_until(
            lambda: runtime.stored_through(targets),
            6 * 3600,
            "the pipeline to score every event",
            1.0,
            progress,
        )
        elapsed = time.monotonic() - started
        print(
            f"pipeline: {report.published:,} events in {elapsed:.0f}s "
            f"({report.published / elapsed:,.0f} events/s end to end)",
            flush=True,
        )
        rows = runtime.clickhouse.query(
            "SELECT member_id, argMax(churn_probability, version), "
            f"argMax(conversion_probability, version) FROM {settings.clickhouse_database}"
            ".member_scores GROUP BY member_id"
        ).result_rows
        by_pseudonym = {r[0]: (float(r[1]), None if r[2] is None else float(r[2])) for r in rows}
        pseudonym = runtime.pseudonym
    return {m: by_pseudonym[p] for m in members if (p := pseudonym(m)) in by_pseudonym}
