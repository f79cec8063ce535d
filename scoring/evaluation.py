"""Offline evaluation: how well scores made at a cutoff predict what happened next.

Pure helpers (:func:`roc_auc`, :func:`calibration_table`, :func:`recency_baseline`,
:func:`rfm_baseline`) and :func:`evaluate_offline`, which replays events up to a
cutoff through a :class:`~scoring.engine.ScoringEngine` (learning online from
delayed labels as in production), scores members at the cutoff, and compares
with labels read from the events after it:

* **churn**, among members active in the churn window before the cutoff: no
  activity in ``(cutoff, cutoff + churn window]``, or a cancellation or lapse in it;
* **conversion**, among members without an active policy at the cutoff: a
  ``policy_purchased`` in ``(cutoff, cutoff + conversion window]``.

Baselines: *recency* (days since last activity) and *RFM* (sum of the recency,
frequency -- activity count in the 90 days before the cutoff -- and monetary --
annual premium -- quintile scores).

>>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
0.75
>>> recency_baseline({"a": 0.0, "b": 86_400.0 * 3}, 86_400.0 * 10)
{'a': 10.0, 'b': 7.0}
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from schemas.envelope import EventBase
from schemas.registry import EVENT_MODELS
from scoring.activity import ACTIVITY_TYPES, CHURN_EVENT_TYPES, event_type_of
from scoring.clock import DAY, from_ts, to_ts
from scoring.config import ScoringConfig
from scoring.engine import EngineStats
from scoring.partitions import PartitionedEngines
from scoring.records import ModelMetrics

__all__ = [
    "roc_auc",
    "calibration_table",
    "expected_calibration_error",
    "log_loss",
    "recency_baseline",
    "rfm_baseline",
    "evaluate_offline",
]


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Exact ROC AUC (Mann-Whitney, ties count one half); None without both classes."""
    if len(labels) != len(scores):
        raise ValueError("labels and scores differ in length")
    order = sorted(range(len(scores)), key=scores.__getitem__)
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        average_rank = (i + j) / 2.0 + 1.0
        rank_sum += average_rank * sum(1 for k in order[i : j + 1] if labels[k])
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def calibration_table(
    labels: Sequence[int], probabilities: Sequence[float], bins: int = 10
) -> list[dict[str, float]]:
    """Per equal-width probability bin: its range, count, mean prediction, observed rate.

    >>> calibration_table([0, 1, 1], [0.05, 0.95, 0.85], bins=2)[1]
    {'low': 0.5, 'high': 1.0, 'count': 2, 'mean_prediction': 0.9, 'observed_rate': 1.0}
    """
    counts = [0] * bins
    predicted = [0.0] * bins
    observed = [0.0] * bins
    for y, p in zip(labels, probabilities, strict=True):
        index = min(bins - 1, max(0, int(p * bins)))
        counts[index] += 1
        predicted[index] += p
        observed[index] += y
    return [
        {
            "low": i / bins,
            "high": (i + 1) / bins,
            "count": counts[i],
            "mean_prediction": round(predicted[i] / counts[i], 4) if counts[i] else 0.0,
            "observed_rate": round(observed[i] / counts[i], 4) if counts[i] else 0.0,
        }
        for i in range(bins)
    ]


def expected_calibration_error(table: Sequence[Mapping[str, float]]) -> float:
    """Count-weighted mean gap between prediction and observed rate over a calibration table."""
    total = sum(row["count"] for row in table)
    if not total:
        return 0.0
    gap = sum(row["count"] * abs(row["mean_prediction"] - row["observed_rate"]) for row in table)
    return gap / total


def log_loss(labels: Sequence[int], probabilities: Sequence[float]) -> float | None:
    """Mean log loss (probabilities clipped to [1e-7, 1 - 1e-7]); None without labels.

    >>> round(log_loss([1, 0], [0.8, 0.4]), 4)
    0.367
    """
    if len(labels) != len(probabilities):
        raise ValueError("labels and probabilities differ in length")
    if not labels:
        return None
    total = 0.0
    for y, p in zip(labels, probabilities, strict=True):
        p = min(1.0 - 1e-7, max(1e-7, p))
        total -= math.log(p) if y else math.log(1.0 - p)
    return total / len(labels)


def recency_baseline(last_activity: Mapping[str, float], at: float) -> dict[str, float]:
    """Days since each member's last activity (epoch seconds) at ``at``: a churn score."""
    return {member: max(0.0, (at - last) / DAY) for member, last in last_activity.items()}


def _quintiles(values: Mapping[str, float]) -> dict[str, int]:
    """1..5 by rank (ties share the average rank)."""
    members = sorted(values, key=values.__getitem__)
    n = len(members)
    out: dict[str, int] = {}
    i = 0
    while i < n:
        j = i
        while j + 1 < n and values[members[j + 1]] == values[members[i]]:
            j += 1
        rank = (i + j) / 2.0 + 1.0
        quintile = min(5, int(5.0 * rank / (n + 1)) + 1)
        for k in range(i, j + 1):
            out[members[k]] = quintile
        i = j + 1
    return out


def rfm_baseline(
    recency_days: Mapping[str, float],
    frequency: Mapping[str, float],
    monetary: Mapping[str, float],
) -> dict[str, float]:
    """Classic RFM: 3..15, higher = more valuable (recent, frequent, paying). Negate for churn.

    >>> rfm_baseline({"a": 1.0, "b": 30.0}, {"a": 9.0, "b": 1.0}, {"a": 0.0, "b": 0.0})
    {'a': 11.0, 'b': 7.0}
    """
    r = _quintiles({m: -d for m, d in recency_days.items()})
    f = _quintiles({m: frequency.get(m, 0.0) for m in recency_days})
    v = _quintiles({m: monetary.get(m, 0.0) for m in recency_days})
    return {m: float(r[m] + f[m] + v[m]) for m in recency_days}


def _total_stats(stats: Sequence[EngineStats]) -> EngineStats:
    total = EngineStats()
    for one in stats:
        for name in vars(total):
            setattr(total, name, getattr(total, name) + getattr(one, name))
    return total


def _event(item: EventBase | Mapping[str, Any]) -> EventBase:
    if isinstance(item, EventBase):
        return item
    return EVENT_MODELS[str(item["event_type"])].model_validate(item)


def _report(labels: list[int], scores: dict[str, list[float]]) -> dict[str, Any]:
    return {
        "population": len(labels),
        "positives": sum(labels),
        **{f"auc_{name}": roc_auc(labels, values) for name, values in scores.items()},
    }


def evaluate_offline(
    events: Iterable[EventBase | Mapping[str, Any]],
    truth: Iterable[Mapping[str, Any]] | None,
    cutoff: datetime,
    config: ScoringConfig,
    served: Mapping[str, tuple[float, float | None]] | None = None,
    partitions: int = 1,
) -> dict[str, Any]:
    """Replay events up to ``cutoff``, score at it, and measure against what came after.

    ``partitions`` splits members as the pipeline does, each partition with its own
    models (:class:`~scoring.partitions.PartitionedEngines`; 1: one model bank for all).

    ``served``, when given, holds the scores a running pipeline stored for each member
    (churn probability, conversion probability): they replace the in-process engine's
    as the "model" column; labels and baselines are computed the same way.

    ``events`` are typed events or their JSON-ready dicts, in event-time order.
    ``truth`` (the simulator's per-member ground truth, optional) adds the AUC of
    the churn score against the simulator's own ``churn_at`` within the window.
    Returns a dict of figures (see the module docstring); ``engine`` in it is the
    :class:`~scoring.engine.EngineStats` of the replay, ``model_events`` the drift and
    promotion records emitted during it.
    """
    cut = to_ts(cutoff)
    churn_end = cut + config.churn_window_days * DAY
    conversion_end = cut + config.conversion_window_days * DAY
    engines = PartitionedEngines(partitions, config)
    last_activity: dict[str, float] = {}
    recent_counts: dict[str, float] = {}
    frequency_from = cut - 90.0 * DAY
    active_after: set[str] = set()
    churned_after: set[str] = set()
    bought_after: set[str] = set()
    processed = 0
    model_events: list[dict[str, Any]] = []
    started = time.perf_counter()
    for item in events:
        event = _event(item)
        at = to_ts(event.occurred_at)
        member = event.member_id
        event_type = event_type_of(event)
        if at <= cut:
            for record in engines.process(event):
                if isinstance(record, ModelMetrics):
                    model_events.append(record.to_row())
            processed += 1
            if event_type in ACTIVITY_TYPES:
                last_activity[member] = max(at, last_activity.get(member, at))
                if at > frequency_from:
                    recent_counts[member] = recent_counts.get(member, 0.0) + 1.0
            continue
        if at > conversion_end:
            break
        if at <= churn_end:
            if event_type in ACTIVITY_TYPES:
                active_after.add(member)
            if event_type in CHURN_EVENT_TYPES:
                churned_after.add(member)
        if event_type == "policy_purchased":
            bought_after.add(member)
    elapsed = time.perf_counter() - started
    engines.advance(cutoff)

    window = config.churn_window_days * DAY
    # members who withdrew analytics consent are not scored, so not evaluated either
    scored = {m for m in engines.members() if not engines.opted_out(m)}
    churn_members = sorted(
        m for m, last in last_activity.items() if cut - last < window and m in scored
    )
    records = {m: engines.score_member(m, cutoff) for m in engines.members() if m in scored}
    recency = recency_baseline(last_activity, cut)
    premium = {m: r.annual_premium for m, r in records.items()}
    rfm = rfm_baseline({m: recency.get(m, 365.0) for m in records}, recent_counts, premium)

    churn_labels = [int(m in churned_after or m not in active_after) for m in churn_members]
    if served is not None:
        churn_probs = [served[m][0] if m in served else 0.5 for m in churn_members]
    else:
        churn_probs = [records[m].churn_probability for m in churn_members]
    churn = _report(
        churn_labels,
        {
            "model": churn_probs,
            "recency": [recency[m] for m in churn_members],
            "rfm": [-rfm[m] for m in churn_members],
        },
    )
    table = calibration_table(churn_labels, churn_probs)
    churn["calibration"] = table
    churn["calibration_error"] = round(expected_calibration_error(table), 4)
    churn["mean_probability"] = round(sum(churn_probs) / max(1, len(churn_probs)), 4)
    banks = [e.models for e in engines.engines]
    churn["model_version"] = ",".join(sorted({b.churn.version for b in banks}))
    churn["drifts"] = sum(b.churn.drifts for b in banks)
    churn["promotions"] = sum(b.churn.promotions for b in banks)
    if truth is not None:
        truth_churn = {
            str(t["member_id"])
            for t in truth
            if t.get("churn_at") and cut < to_ts(datetime.fromisoformat(t["churn_at"])) <= churn_end
        }
        churn["auc_model_vs_truth"] = roc_auc(
            [int(m in truth_churn) for m in churn_members], churn_probs
        )

    conversion_members = sorted(
        m for m, r in records.items() if r.conversion_probability is not None
    )
    conversion_labels = [int(m in bought_after) for m in conversion_members]
    conversion = _report(
        conversion_labels,
        {
            "model": [
                (served[m][1] if m in served else None) or 0.0
                if served is not None
                else records[m].conversion_probability or 0.0
                for m in conversion_members
            ],
            "recency": [-recency.get(m, 365.0) for m in conversion_members],
            "rfm": [rfm[m] for m in conversion_members],
        },
    )
    conversion["model_version"] = ",".join(sorted({b.conversion.version for b in banks}))
    conversion["drifts"] = sum(b.conversion.drifts for b in banks)
    conversion["promotions"] = sum(b.conversion.promotions for b in banks)
    return {
        "cutoff": from_ts(cut).isoformat(),
        "events_replayed": processed,
        "replay_seconds": round(elapsed, 2),
        "microseconds_per_event": round(1e6 * elapsed / max(1, processed), 1),
        "churn": churn,
        "conversion": conversion,
        "partitions": partitions,
        "model_metrics": [m.to_row() for e in engines.engines for m in e.model_metrics(cutoff)],
        "model_events": model_events,
        "engine": _total_stats([e.stats for e in engines.engines]),
    }
