"""Churn baselines from purchase histories, and the purchase-log evaluation built on them."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scoring.baselines import (
    bgnbd_baseline,
    customer_summaries,
    frequency_scores,
    recency_scores,
    rfm_scores,
)
from scoring.bgnbd import CustomerSummary
from scoring.config import ScoringConfig
from scoring.evaluation import roc_auc
from scoring.purchase_log import evaluate_purchase_log

pytestmark = pytest.mark.unit


def test_summaries_count_distinct_days_up_to_the_end() -> None:
    days = {"a": [3, 3, 10, 40], "b": [50], "c": [0, 1, 2]}
    summaries = customer_summaries(days, last_day=30)
    assert summaries == {
        "a": CustomerSummary(1, 7.0, 27.0),  # day 3 twice is one purchase; day 40 is later
        "c": CustomerSummary(2, 2.0, 30.0),
    }
    assert customer_summaries(days, last_day=30, unit_days=7.0)["a"].T == pytest.approx(27 / 7)


def test_recency_frequency_and_rfm_order_customers_as_their_definitions_say() -> None:
    days = {"recent": [28, 29], "old": [1], "frequent": [5, 10, 15, 20, 25]}
    assert recency_scores(days, 30) == {"recent": 1.0, "old": 29.0, "frequent": 5.0}
    assert frequency_scores(days) == {"recent": -2.0, "old": -1.0, "frequent": -5.0}
    rfm = rfm_scores(days, {"recent": 10.0, "old": 1.0, "frequent": 100.0}, 30)
    assert rfm["old"] > rfm["recent"] and rfm["old"] > rfm["frequent"]  # old: likeliest churn


def _buyers(n: int, seed: int) -> dict[str, list[int]]:
    """Customers buying every ``gap`` days until they stop at a random day."""
    rng = random.Random(seed)
    out: dict[str, list[int]] = {}
    for i in range(n):
        gap = rng.choice([7, 14, 30, 60])
        start = rng.randrange(0, 60)
        stop = rng.randrange(start, 400)
        out[f"c{i}"] = list(range(start, stop + 1, gap))
    return out


def test_bgnbd_baseline_ranks_simulated_churners() -> None:
    days = _buyers(600, seed=2)
    cutoff, holdout = 200, 100
    calibration = {c: [d for d in ds if d <= cutoff] for c, ds in days.items()}
    calibration = {c: ds for c, ds in calibration.items() if ds}
    churned = {
        c: int(not any(cutoff < d <= cutoff + holdout for d in days[c])) for c in calibration
    }
    bg = bgnbd_baseline(calibration, cutoff, holdout)
    members = sorted(calibration)
    labels = [churned[m] for m in members]
    no_purchase = bg.no_purchase()
    auc = roc_auc(labels, [no_purchase[m] for m in members])
    assert auc is not None and auc > 0.8
    assert all(0.0 <= no_purchase[m] <= 1.0 for m in members)


def _event(member: str, day: float, first: bool) -> dict[str, Any]:
    at = datetime(2025, 1, 1, 12, tzinfo=UTC) + timedelta(days=day)
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": "policy_purchased" if first else "policy_renewed",
        "occurred_at": at.isoformat(),
        "member_id": member,
        "channel": "web",
        "properties": {
            "policy_id": f"p-{member}",
            "product_line": "property",
            "premium": 10.0,
            "currency": "USD",
            "term_months": 1,
        },
    }


def test_purchase_log_evaluation_labels_members_by_the_holdout() -> None:
    days = _buyers(300, seed=5)
    events = []
    for member, ds in days.items():
        events += [_event(member, d, i == 0) for i, d in enumerate(ds)]
    events.sort(key=lambda e: e["occurred_at"])
    cutoff = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=201)
    config = ScoringConfig(churn_window_days=30.0, min_labels_for_model=100)
    report = evaluate_purchase_log(events, cutoff, 100.0, config, partitions=2)
    calibration = {m for m, ds in days.items() if min(ds) <= 200}
    churned = {m for m in calibration if not any(200 < d <= 300 for d in days[m])}
    assert report["members"] == len(calibration) and report["churned"] == len(churned)
    assert report["partitions"] == 2
    for name in ("model", "latest_emitted", "recency", "frequency", "rfm", "bgnbd"):
        assert report[name]["auc"] is not None and report[name]["auc"] > 0.5, name
    assert 0.0 <= report["model"]["ece"] <= 1.0 and report["model"]["log_loss"] > 0.0
    assert sum(report["model_versions"].values()) == len(calibration)
    # served scores (e.g. read back from a pipeline) replace the in-process ones
    perfect = {m: float(m in churned) for m in calibration}
    served = evaluate_purchase_log(events, cutoff, 100.0, config, served=perfect)
    assert served["model"]["auc"] == 1.0 and served["source"] == "pipeline"
