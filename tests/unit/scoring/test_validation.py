"""Live model quality: delayed progressive validation, drift, champion/challenger."""

from __future__ import annotations

import random

import pytest
from scoring_fixtures import MakeEvent, day

from scoring.config import ScoringConfig
from scoring.engine import ScoringEngine
from scoring.evaluation import roc_auc
from scoring.models import ModelSlot
from scoring.priors import churn_prior
from scoring.records import ModelMetrics
from scoring.validation import ProgressiveValidation, log_loss_of

pytestmark = pytest.mark.unit


def test_metrics_match_exact_figures_without_forgetting() -> None:
    rng = random.Random(3)
    pairs = []
    for _ in range(3000):
        y = int(rng.random() < 0.3)
        p = min(0.999, max(0.001, rng.betavariate(2 + 3 * y, 4)))
        pairs.append((p, y))
    v = ProgressiveValidation(half_life=1e12)
    for p, y in pairs:
        v.update(p, y)
    exact = roc_auc([y for _, y in pairs], [p for p, _ in pairs])
    assert exact is not None and v.roc_auc() == pytest.approx(exact, abs=0.005)
    assert v.log_loss() == pytest.approx(sum(log_loss_of(p, y) for p, y in pairs) / 3000)
    assert v.positive_rate() == pytest.approx(sum(y for _, y in pairs) / 3000)
    assert v.labels == 3000


def test_calibration_error_of_a_perfect_and_a_biased_model() -> None:
    perfect, biased = ProgressiveValidation(1e12), ProgressiveValidation(1e12)
    for i in range(1000):
        y = int(i % 5 == 0)  # 20% positives, all predicted 0.2
        perfect.update(0.2, y)
        biased.update(0.6, y)
    assert perfect.calibration_error() == pytest.approx(0.0, abs=1e-9)
    assert biased.calibration_error() == pytest.approx(0.4)


def test_forgetting_follows_a_change_of_quality() -> None:
    v = ProgressiveValidation(half_life=200)
    for i in range(2000):  # first a perfect ranking...
        v.update(0.9 if i % 2 else 0.1, i % 2)
    assert v.roc_auc() == pytest.approx(1.0)
    for i in range(2000):  # ...then an inverted one
        v.update(0.1 if i % 2 else 0.9, i % 2)
    auc = v.roc_auc()
    assert auc is not None and auc < 0.05


def test_nothing_to_report_before_labels() -> None:
    v = ProgressiveValidation(100)
    assert (v.roc_auc(), v.log_loss(), v.calibration_error(), v.positive_rate()) == (
        None,
        None,
        None,
        None,
    )


def _stream(slot: ModelSlot, n: int, flipped: bool, rng: random.Random) -> tuple[int, int]:
    drifts = promotions = 0
    for _ in range(n):
        signal = rng.uniform(-1, 1)
        y = int((signal > 0) != flipped) if rng.random() < 0.9 else int(rng.random() < 0.5)
        x = {"activity_trend": signal, "nps": rng.gauss(0, 1)}
        drifted, promoted = slot.learn(x, y, slot.serve(x).probability)
        drifts += drifted
        promotions += promoted
    return drifts, promotions


def test_drift_then_challenger_promotion_bumps_the_version() -> None:
    config = ScoringConfig(min_labels_for_model=100, promote_challenger=True)
    slot = ModelSlot("churn", churn_prior(30.0), config, 0)
    rng = random.Random(11)
    assert _stream(slot, 4000, False, rng) == (0, 0)  # a stable concept: no drift
    assert slot.version == "churn-logreg-v1"
    drifts, promotions = _stream(slot, 3000, True, rng)
    assert drifts >= 1 and promotions >= 1
    assert slot.version == f"churn-logreg-v{1 + promotions}"
    # the promoted model learned the new concept
    assert slot.serve({"activity_trend": 0.8, "nps": 0.0}).probability < 0.3


def test_without_promotion_a_drift_is_reported_and_the_champion_refits() -> None:
    slot = ModelSlot("churn", churn_prior(30.0), ScoringConfig(min_labels_for_model=100), 0)
    rng = random.Random(11)
    assert _stream(slot, 4000, False, rng) == (0, 0)
    fits = slot.champion.fits
    drifts, promotions = _stream(slot, 3000, True, rng)
    assert drifts >= 1 and promotions == 0 and slot.drifts == drifts
    assert slot.version == "churn-logreg-v1"
    assert slot.challenger.labels == 0  # no challenger is trained
    assert slot.champion.fits >= fits + 3  # the champion refits on what it learns


def test_engine_reports_quality_per_model(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    for i in range(60):
        engine.process(make_event("post_created", f"m-{i}", i * 0.01))
        if i % 2:
            engine.process(make_event("post_created", f"m-{i}", 5 + i * 0.01))
    engine.advance(0, day(40))
    churn, conversion = engine.model_metrics(day(40))
    assert isinstance(churn, ModelMetrics) and churn.model == "churn"
    assert conversion.model == "conversion" and conversion.labels_seen == 0
    # Labels so far: every member's first snapshot (the odd ones came back: retained;
    # the even ones did not: churned at day 30) and the even ones' 7-day silence snapshot.
    assert churn.labels_seen == 90 and churn.model_version == "churn-prior"
    assert churn.positive_rate == pytest.approx(2 / 3, abs=0.01)
    # served at snapshot time by the prior: 0.12 at day 0 (both classes), 0.40 at 7 days
    assert churn.roc_auc == pytest.approx(0.75, abs=0.01)
    assert churn.log_loss is not None and churn.calibration_error is not None
    assert churn.to_row()["drift_detected"] == 0


def test_auc_resolves_a_model_whose_probabilities_are_all_small() -> None:
    rng = random.Random(9)
    v = ProgressiveValidation(half_life=1e12)
    labels, scores = [], []
    for _ in range(5000):
        y = int(rng.random() < 0.03)
        p = 0.002 * (1 + rng.random()) * (4 if y else 1)  # all below 0.02
        v.update(p, y)
        labels.append(y)
        scores.append(p)
    exact = roc_auc(labels, scores)
    assert exact is not None and exact > 0.9
    assert v.roc_auc() == pytest.approx(exact, abs=0.02)
