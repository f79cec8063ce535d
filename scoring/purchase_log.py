"""Churn quality on a real purchase log: the served score against recency, RFM and BG/NBD.

:func:`evaluate_purchase_log` replays the purchase events up to a cutoff through
``P`` scoring engines split as the pipeline splits members (one model bank per
partition, :class:`~scoring.partitions.PartitionedEngines`), scores every member at the
cutoff with its partition's current model -- what ``member_scores`` serves once every
member is re-scored daily -- and compares with what each member did in the holdout:

* label: churned = no purchase in ``(cutoff, cutoff + holdout_days]``;
* population: every member with a purchase up to the cutoff;
* baselines on the same members and labels: recency (days since the last purchase),
  frequency (distinct purchase days), RFM quintiles, and BG/NBD fitted on the
  calibration period (``P(no purchase in the holdout)`` and ``1 - P(alive)``).

ROC AUC for all; log loss and expected calibration error (10 bins) for the
probabilities (the model, BG/NBD). ``served`` (member -> churn probability) replaces
the in-process score, e.g. with what a pipeline stored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from schemas.envelope import EventBase
from schemas.registry import EVENT_MODELS
from scoring.activity import event_type_of
from scoring.baselines import (
    bgnbd_baseline,
    frequency_scores,
    recency_scores,
    rfm_scores,
)
from scoring.bgnbd import BgNbdFitError
from scoring.clock import DAY, to_ts
from scoring.config import ScoringConfig
from scoring.evaluation import (
    calibration_table,
    expected_calibration_error,
    log_loss,
    roc_auc,
)
from scoring.partitions import PartitionedEngines
from scoring.records import ScoreRecord

__all__ = ["PURCHASE_TYPES", "evaluate_purchase_log", "probability_report"]

#: Event types that count as a purchase for labels and baselines.
PURCHASE_TYPES = frozenset({"policy_purchased", "policy_renewed"})


def _event(item: EventBase | Mapping[str, Any]) -> EventBase:
    if isinstance(item, EventBase):
        return item
    return EVENT_MODELS[str(item["event_type"])].model_validate(item)


def probability_report(labels: Sequence[int], probabilities: Sequence[float]) -> dict[str, Any]:
    """AUC, log loss, ECE and mean of probabilities against labels.

    >>> r = probability_report([0, 1, 1, 0], [0.2, 0.7, 0.9, 0.4])
    >>> r["auc"], round(r["log_loss"], 3), r["ece"], r["mean"]
    (1.0, 0.299, 0.25, 0.55)
    """
    table = calibration_table(labels, probabilities)
    return {
        "auc": roc_auc(labels, probabilities),
        "log_loss": log_loss(labels, probabilities),
        "ece": round(expected_calibration_error(table), 4),
        "mean": round(sum(probabilities) / max(1, len(probabilities)), 4),
    }


def evaluate_purchase_log(
    events: Iterable[EventBase | Mapping[str, Any]],
    cutoff: datetime,
    holdout_days: float,
    config: ScoringConfig,
    partitions: int = 1,
    served: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Replay to ``cutoff`` (exclusive end of the calibration period), score, compare.

    ``events`` are typed events or JSON-ready dicts, oldest first. Purchases at or
    before ``cutoff`` are the calibration period, those in ``(cutoff, cutoff +
    holdout_days]`` decide the labels; later events are ignored.
    """
    cut = to_ts(cutoff)
    end = cut + holdout_days * DAY
    engines = PartitionedEngines(partitions, config)
    days: dict[str, list[int]] = {}
    spend: dict[str, float] = {}
    bought_after: set[str] = set()
    latest: dict[str, float] = {}
    replayed = 0
    started = time.perf_counter()
    for item in events:
        event = _event(item)
        at = to_ts(event.occurred_at)
        member = event.member_id
        is_purchase = event_type_of(event) in PURCHASE_TYPES
        if at <= cut:
            for record in engines.process(event):
                if isinstance(record, ScoreRecord):
                    latest[record.member_id] = record.churn_probability
            replayed += 1
            if is_purchase:
                # day numbers of the calibration period, as in the BG/NBD literature
                days.setdefault(member, []).append(int(at // DAY))
                props: Any = getattr(event, "properties", None)
                spend[member] = spend.get(member, 0.0) + float(props.premium)
        elif at <= end:
            if is_purchase:
                bought_after.add(member)
        else:
            break
    # the end of the log: caught up, as a pipeline is once it stored it all
    for record in [*engines.advance(cutoff), *engines.daily_scores()]:
        if isinstance(record, ScoreRecord):
            latest[record.member_id] = record.churn_probability
    elapsed = time.perf_counter() - started

    last_day = int((cut - 1e-6) // DAY)
    members = sorted(m for m in days if m in engines)
    labels = [int(m not in bought_after) for m in members]
    records = {m: engines.score_member(m, cutoff) for m in members}
    model = [
        served.get(m, 0.5) if served is not None else records[m].churn_probability for m in members
    ]
    recency = recency_scores(days, last_day)
    frequency = frequency_scores(days)
    rfm = rfm_scores(days, spend, last_day)
    report: dict[str, Any] = {
        "cutoff": cutoff.isoformat(),
        "holdout_days": holdout_days,
        "churn_window_days": config.churn_window_days,
        "partitions": partitions,
        "events_replayed": replayed,
        "replay_seconds": round(elapsed, 2),
        "members": len(members),
        "churned": sum(labels),
        "model": probability_report(labels, model),
        "latest_emitted": probability_report(labels, [latest.get(m, 0.5) for m in members]),
        "recency": {"auc": roc_auc(labels, [recency[m] for m in members])},
        "frequency": {"auc": roc_auc(labels, [frequency[m] for m in members])},
        "rfm": {"auc": roc_auc(labels, [rfm[m] for m in members])},
        "source": "pipeline" if served is not None else "in-process engines",
    }
    versions: dict[str, int] = {}
    for m in members:
        versions[records[m].model_version] = versions.get(records[m].model_version, 0) + 1
    report["model_versions"] = versions
    try:
        bg = bgnbd_baseline(days, last_day, holdout_days)
    except BgNbdFitError as exc:
        report["bgnbd"] = {"error": str(exc)}
    else:
        no_purchase, dead = bg.no_purchase(), bg.dead()
        report["bgnbd"] = {
            **probability_report(labels, [no_purchase[m] for m in members]),
            "auc_dead": roc_auc(labels, [dead[m] for m in members]),
            "params": {k: round(getattr(bg.params, k), 4) for k in ("r", "alpha", "a", "b")},
        }
    report["model"]["mean_label"] = round(sum(labels) / max(1, len(labels)), 4)
    report["model"]["log_loss_base_rate"] = _base_rate_loss(labels)
    return report


def _base_rate_loss(labels: Sequence[int]) -> float | None:
    """Log loss of always predicting the observed churn rate (the bar to beat)."""
    if not labels:
        return None
    rate = sum(labels) / len(labels)
    if rate in (0.0, 1.0):
        return 0.0
    return -(rate * math.log(rate) + (1.0 - rate) * math.log(1.0 - rate))
