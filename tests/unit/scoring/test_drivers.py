"""top_drivers: the features that moved the churn score most, with their sign."""

from __future__ import annotations

import pytest
from scoring_fixtures import MakeEvent, day

from scoring.config import ScoringConfig
from scoring.engine import ScoringEngine

pytestmark = pytest.mark.unit

RECENCY = {"recency_days", "log_recency", "silent_7", "silent_14", "silent_21", "log_silence_ratio"}


def test_prior_explains_itself_with_recency(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    record = engine.score_member("m-1", day(20))
    assert record.churn_model == "prior"
    assert record.top_drivers == [("recency_days", pytest.approx(4.0 * 20 / 30))]


def test_learned_drivers_have_the_right_signs(make_event: MakeEvent) -> None:
    # recency separates this story perfectly: the model (AUC 0.995 on its labels) is
    # allowed to serve within 0.01 of the prior, to read its drivers
    engine = ScoringEngine(ScoringConfig(min_labels_for_model=100, prior_auc_tolerance=0.01))
    for i in range(150):  # steady members come back every 4 days, the others vanish
        engine.process(make_event("content_viewed", f"steady-{i}", i * 0.001))
        engine.process(make_event("content_viewed", f"gone-{i}", i * 0.001))
    for step in range(1, 30):
        for i in range(150):
            engine.process(make_event("content_viewed", f"steady-{i}", step * 4 + i * 0.001))
        engine.advance(0, day(step * 4))
    assert engine.models.churn.generation >= 1
    engine.process(make_event("content_viewed", "late", 100))
    silent = engine.score_member("late", day(120))
    active = engine.score_member("steady-0", day(116.5))
    assert silent.churn_model == "model"
    assert silent.churn_probability > 0.6 > 0.3 > active.churn_probability
    assert 1 <= len(silent.top_drivers) <= 5
    sizes = [abs(value) for _, value in silent.top_drivers]
    assert sizes == sorted(sizes, reverse=True)
    silent_recency = [v for name, v in silent.top_drivers if name in RECENCY]
    active_recency = [v for name, v in active.top_drivers if name in RECENCY]
    assert silent_recency and all(v > 0 for v in silent_recency)
    assert all(v < 0 for v in active_recency)
