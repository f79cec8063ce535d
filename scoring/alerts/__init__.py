"""Threshold alerts on member scores and community aggregates, in event time."""

from __future__ import annotations

from scoring.alerts.engine import AlertEngine, AlertRecord, alert_id
from scoring.alerts.rules import AlertRuleError, RuleSet, default_rules, load_rules

__all__ = [
    "AlertEngine",
    "AlertRecord",
    "AlertRuleError",
    "RuleSet",
    "alert_id",
    "default_rules",
    "load_rules",
]
