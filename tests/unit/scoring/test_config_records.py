"""Configuration validation and record rows (keys are the ClickHouse columns)."""

from __future__ import annotations

import pytest
from scoring_fixtures import MakeEvent, day

from schemas.errors import PulseError
from scoring.config import ScoringConfig
from scoring.engine import ScoringEngine, risk_band
from scoring.errors import ConfigError, UnknownMember
from scoring.records import LabelApplied, LifecycleTransition, ModelMetrics, ScoreRecord

pytestmark = pytest.mark.unit

SCORE_COLUMNS = {
    "member_id",
    "scored_at",
    "trigger",
    "engagement_score",
    "engagement_tier",
    "churn_probability",
    "churn_risk",
    "churn_model",
    "conversion_probability",
    "lifecycle_stage",
    "top_drivers",
    "model_version",
    "last_event_at",
    "community_id",
    "annual_premium",
    "active_policies",
    "version",
}


@pytest.mark.parametrize(
    "bad",
    [
        {"churn_window_days": 0},
        {"silence_boundaries_days": (14.0, 7.0)},
        {"silence_boundaries_days": ()},
        {"risk_medium_min": 0.7, "risk_high_min": 0.6},
        {"tier_casual_min": 70.0},
        {"min_labels_for_model": 0},
        {"short_half_life_days": 40.0},
        {"allowed_lateness_seconds": -1.0},
    ],
)
def test_invalid_configs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        ScoringConfig(**bad)  # type: ignore[arg-type]
    assert isinstance(info.value, PulseError)


def test_risk_bands_follow_the_config() -> None:
    config = ScoringConfig(risk_medium_min=0.2, risk_high_min=0.5)
    assert [risk_band(p, config) for p in (0.19, 0.2, 0.49, 0.5)] == [
        "low",
        "medium",
        "medium",
        "high",
    ]


def test_rows_have_the_clickhouse_columns(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("policy_purchased", "m-1", 0))
    records = engine.advance(0, day(31))
    score = next(r for r in records if isinstance(r, ScoreRecord))
    row = score.to_row()
    assert set(row) == SCORE_COLUMNS
    assert row["version"] == int(score.scored_at.timestamp() * 1_000_000)
    assert row["trigger"] == "silence" and row["conversion_probability"] is None
    assert row["annual_premium"] == 1200.0 and row["active_policies"] == 1
    assert row["scored_at"].tzinfo is not None
    transition = next(r for r in records if isinstance(r, LifecycleTransition))
    assert set(transition.to_row()) == {
        "member_id",
        "at",
        "from_stage",
        "to_stage",
        "cause_event_type",
        "community_id",
    }
    label = next(r for r in records if isinstance(r, LabelApplied))
    assert label.to_row()["label"] == 1
    metrics = engine.model_metrics(day(31))[0]
    assert isinstance(metrics, ModelMetrics)
    assert set(metrics.to_row()) == {
        "model",
        "model_version",
        "at",
        "labels_seen",
        "roc_auc",
        "log_loss",
        "calibration_error",
        "positive_rate",
        "drift_detected",
        "promoted",
    }


def test_unknown_member_is_a_typed_error() -> None:
    with pytest.raises(UnknownMember):
        ScoringEngine().score_member("nobody", day(0))
