"""Pure scoring: member state, engagement, churn, conversion and lifecycle on event time."""

from __future__ import annotations

from scoring.config import ScoringConfig
from scoring.engine import EngineStats, ScoringEngine, risk_band
from scoring.errors import CheckpointError, ConfigError, ScoringError, UnknownMember
from scoring.lifecycle import Stage
from scoring.records import LabelApplied, LifecycleTransition, ModelMetrics, Record, ScoreRecord
from scoring.state import MemberState

__all__ = [
    "ScoringConfig",
    "ScoringEngine",
    "EngineStats",
    "risk_band",
    "MemberState",
    "ScoreRecord",
    "LifecycleTransition",
    "ModelMetrics",
    "LabelApplied",
    "Record",
    "Stage",
    "ScoringError",
    "ConfigError",
    "CheckpointError",
    "UnknownMember",
]
