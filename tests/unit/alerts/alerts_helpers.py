"""Builders shared by the alert tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scoring.alerts.rules import RuleSet
from scoring.records import ScoreRecord

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)  # a Monday


def at(hours: float = 0.0, days: float = 0.0) -> datetime:
    """``T0`` plus an offset."""
    return T0 + timedelta(hours=hours, days=days)


def score(when: datetime, member: str = "m1", **fields: Any) -> ScoreRecord:
    """A score record at ``when`` with harmless defaults, overridden by ``fields``."""
    values: dict[str, Any] = {
        "member_id": member,
        "scored_at": when,
        "trigger": "event",
        "engagement_score": 50.0,
        "engagement_tier": "medium",
        "churn_probability": 0.1,
        "churn_risk": "low",
        "churn_model": "model",
        "conversion_probability": None,
        "lifecycle_stage": "loyal",
        "top_drivers": [("days_since_last_event", 1.2)],
        "model_version": "churn-logreg-v1",
        "last_event_at": when,
        "community_id": "c1",
        "annual_premium": 5000.0,
        "active_policies": 1,
    }
    values.update(fields)
    return ScoreRecord(**values)


def ruleset(**rule: Any) -> RuleSet:
    """A rule set holding one rule (severity warning unless given)."""
    return RuleSet.parse({"rules": [{"severity": "warning", **rule}]})
