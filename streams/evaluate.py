"""``pulse evaluate``: churn and conversion quality against the simulator or a real log.

Two sources of truth:

* the simulator (default): below;
* a real purchase log, ``--transactions FILE.csv``: the file is mapped to purchase
  events (:mod:`streams.transactions`), the calibration period up to ``--cutoff`` is
  scored (in process, or through the pipeline) and the churn score of every member at
  the cutoff is compared with whether the member bought in the next
  ``--holdout-days``, next to recency, frequency, RFM and BG/NBD fitted on the same
  split (:mod:`scoring.purchase_log`).

For the simulator:

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
import contextlib
import json
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from scoring.config import ScoringConfig
from scoring.evaluation import evaluate_offline
from scoring.purchase_log import evaluate_purchase_log
from streams.config import Settings
from streams.simulator import SimulationConfig, ground_truth, simulate
from streams.transactions import ColumnSpec, TransactionLogError, purchase_events, read_transactions

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
    if getattr(args, "transactions", None):
        return run_purchase_log_evaluation(args)
    config = _config(args)
    started = time.monotonic()
    assert config.start is not None
    cutoff: datetime = config.start + timedelta(days=config.days - 90)
    print(
        f"simulating {config.members:,} members over {config.days} days (seed {config.seed}); "
        f"cutoff {cutoff.date()}",
        flush=True,
    )
    settings = Settings.from_env()
    scoring = ScoringConfig(seed=config.seed, promote_challenger=settings.promote_challenger)
    served = None
    if args.pipeline:
        with _data_dir(args) as tmp:
            run = settings.with_(data_dir=tmp, metrics_port=0)
            lines = (
                json.dumps(e, separators=(",", ":")).encode()
                for e in simulate(config)
                if datetime.fromisoformat(e["occurred_at"]) <= cutoff
            )
            members = [str(t["member_id"]) for t in ground_truth(config)]
            served, currency = _served_by_pipeline(lines, members, run)
        print(f"scores read back from ClickHouse for {len(served):,} members", flush=True)
        _print_currency(currency)
    report = evaluate_offline(
        simulate(config), ground_truth(config), cutoff, scoring, served, args.partitions
    )
    report["source"] = "pipeline" if served is not None else "in-process engine"
    if served is not None:
        report["current_scores"] = currency
    _print(report, time.monotonic() - started)
    return 0


def _served_by_pipeline(
    lines: Iterable[bytes], members: list[str], settings: Settings
) -> tuple[dict[str, tuple[float, float | None]], dict[str, Any]]:
    """Publish ``lines`` through the real pipeline; read back each member's latest scores,
    and how current they are (:func:`_currency`).

    Everything is published before the worker reads, as ``pulse replay`` does, so
    the figures do not depend on how fast the publisher ran."""
    from streams.replay import Publisher, wait_until
    from streams.runtime import Runtime

    runtime = Runtime(settings, serve_http=False, announce=False).start(consume=False)
    try:
        publisher = Publisher(runtime.bootstrap, settings.topic_prefix)
        report = publisher.publish_lines(lines)
        publisher.close()
        print(
            f"published {report.published:,} events; the pipeline is scoring them ...", flush=True
        )
        targets = dict(report.last_offsets)
        started = time.monotonic()
        runtime.consume()

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
        # the last daily batch (every member scored as of the last midnight) and the
        # erasures come once the tasks are caught up: read after them
        wait_until(runtime.drained, 3600, "the last daily batch", 1.0)
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
        currency = _currency(runtime.clickhouse, settings.clickhouse_database)
    finally:
        runtime.stop()
    served = {m: by_pseudonym[p] for m in members if (p := pseudonym(m)) in by_pseudonym}
    return served, currency


def _currency(client: Any, db: str) -> dict[str, Any]:
    """How current the served scores are, from ``member_scores_current``: per task, the
    model versions of its members' latest rows, the oldest of them, how many are not
    current, and the newest event they are compared with."""
    newest = client.query(f"SELECT max(occurred_at) FROM {db}.events").result_rows[0][0]
    rows = client.query(
        "SELECT task, uniqExact(model_version), min(scored_at), countIf(NOT is_current),"
        f" countIf(trigger = 'daily'), count() FROM {db}.member_scores_current"
        " GROUP BY task ORDER BY task"
    ).result_rows
    tasks = [
        {
            "task": int(task),
            "members": int(n),
            "model_versions": int(versions),
            "oldest_score_days": round((newest - oldest).total_seconds() / 86400, 3),
            "not_current": int(stale),
            "from_daily_batch": int(daily),
        }
        for task, versions, oldest, stale, daily, n in rows
    ]
    return {"newest_event_at": newest.isoformat(), "tasks": tasks}


def _print_currency(currency: dict[str, Any]) -> None:
    tasks = currency["tasks"]
    print(
        f"served scores: {sum(t['members'] for t in tasks):,} members in {len(tasks)} task(s); "
        f"model versions per task {max((t['model_versions'] for t in tasks), default=0)}, "
        f"oldest {max((t['oldest_score_days'] for t in tasks), default=0.0):.2f} days before "
        f"the newest event, {sum(t['not_current'] for t in tasks):,} not current",
        flush=True,
    )


# --- a real purchase log ------------------------------------------------------------


def _cutoff_date(args: argparse.Namespace, last: date) -> date:
    if args.cutoff:
        try:
            return date.fromisoformat(args.cutoff)
        except ValueError:
            raise TransactionLogError(
                f"--cutoff {args.cutoff!r} is not a date (YYYY-MM-DD)"
            ) from None
    return last - timedelta(days=args.holdout_days)


def run_purchase_log_evaluation(args: argparse.Namespace) -> int:
    """``pulse evaluate --transactions FILE``: see the module docstring."""
    started = time.monotonic()
    path = Path(args.transactions)
    spec = ColumnSpec(
        customer=args.customer_column,
        date=args.date_column,
        amount=args.amount_column,
        date_format=args.date_format,
        delimiter=args.delimiter,
    )
    log = read_transactions(path, spec)
    if args.holdout_days <= 0:
        raise TransactionLogError("--holdout-days must be > 0")
    settings = Settings.from_env()
    window = args.churn_window_days or settings.churn_window_days
    last = log.transactions[-1].at.date()
    cutoff_day = _cutoff_date(args, last)
    first = log.transactions[0].at.date()
    if not first <= cutoff_day < last:
        raise TransactionLogError(
            f"--cutoff {cutoff_day} must fall within the log ({first} .. {last}), "
            "before its last day"
        )
    cutoff = datetime(cutoff_day.year, cutoff_day.month, cutoff_day.day, tzinfo=UTC) + timedelta(
        days=1
    )
    events = purchase_events(log.transactions, args.currency, args.product_line)
    skipped = f" ({log.skipped_amounts:,} rows with an amount <= 0 skipped)"
    print(
        f"{path}: {len(log.transactions):,} purchases of {log.customers:,} customers"
        f"{skipped if log.skipped_amounts else ''}; calibration to {cutoff_day}, "
        f"holdout {args.holdout_days:g} days, churn window {window:g} days, "
        f"{args.partitions} partition(s)",
        flush=True,
    )
    config = ScoringConfig(
        churn_window_days=window, seed=args.seed, promote_challenger=settings.promote_challenger
    )
    served = None
    if args.pipeline:
        with _data_dir(args) as tmp:
            # a historical log may predate the event-time floor for live traffic
            first = min(t.at for t in log.transactions)
            floor = min(settings.min_event_time_utc, first - timedelta(days=1))
            run = settings.with_(
                data_dir=tmp,
                metrics_port=0,
                churn_window_days=window,
                partitions=args.partitions,
                min_event_time=floor.isoformat(),
            )
            lines = (
                json.dumps(e, separators=(",", ":")).encode()
                for e in events
                if datetime.fromisoformat(e["occurred_at"]) < cutoff
            )
            members = sorted({t.member_id for t in log.transactions})
            scores, currency = _served_by_pipeline(lines, members, run)
        served = {m: churn for m, (churn, _) in scores.items()}
        print(f"scores read back from ClickHouse for {len(served):,} members", flush=True)
        _print_currency(currency)
    report = evaluate_purchase_log(
        events, cutoff, args.holdout_days, config, args.partitions, served
    )
    if served is not None:
        report["current_scores"] = currency
    report["file"] = str(path)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_purchase_log(report, time.monotonic() - started)
    return 0


def _cell(value: float | None, digits: int = 3) -> str:
    return "     -" if value is None else f"{value:6.{digits}f}"


def _print_purchase_log(report: dict[str, Any], elapsed: float) -> None:
    members, churned = report["members"], report["churned"]
    print(
        f"{members:,} members at the cutoff, {churned:,} bought nothing in the holdout "
        f"({churned / max(1, members):.1%}); model scores from the {report['source']}"
    )
    print(f"{'churn score':<34} {'AUC':>6}  {'log loss':>8}  {'ECE':>6}  {'mean':>6}")
    versions = ", ".join(f"{v} x{n:,}" for v, n in sorted(report["model_versions"].items()))
    if report["source"] == "pipeline":
        served = "Pulse served (pipeline's member_scores)"
        emitted = "Pulse latest emitted (in process)"
    else:
        served, emitted = f"Pulse at the cutoff ({versions})", "Pulse latest emitted score"
    rows: list[tuple[str, dict[str, Any]]] = [
        (served, report["model"]),
        (emitted, report["latest_emitted"]),
        ("recency (days since last purchase)", report["recency"]),
        ("frequency (purchase days)", report["frequency"]),
        ("RFM (quintiles)", report["rfm"]),
    ]
    bg = report["bgnbd"]
    if "error" in bg:
        print(f"BG/NBD: {bg['error']}")
    else:
        rows.append(("BG/NBD P(no purchase in holdout)", bg))
        rows.append(("BG/NBD 1 - P(alive)", {"auc": bg["auc_dead"]}))
    for name, r in rows:
        print(
            f"{name:<34} {_cell(r.get('auc'))}  {_cell(r.get('log_loss')):>8}  "
            f"{_cell(r.get('ece'))}  {_cell(r.get('mean'))}"
        )
    if "params" in bg:
        params = ", ".join(f"{k}={v}" for k, v in bg["params"].items())
        print(f"BG/NBD fitted in weeks: {params}")
    print(
        f"(Pulse's probability is P(no activity within {report['churn_window_days']:g} days); "
        f"the label is no purchase within {report['holdout_days']:g} days; "
        f"always-the-base-rate log loss {_cell(report['model']['log_loss_base_rate'])})"
    )
    print(f"evaluated in {elapsed:.0f}s")


@contextlib.contextmanager
def _data_dir(args: argparse.Namespace) -> Iterator[str]:
    """Where the pipeline keeps its data: ``--keep-data`` (kept), else a temporary dir."""
    keep = getattr(args, "keep_data", None)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        print(f"pipeline data kept in {keep}", flush=True)
        yield str(keep)
        return
    with tempfile.TemporaryDirectory(prefix="pulse-evaluate-") as tmp:
        yield tmp
