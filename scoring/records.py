"""What the engine emits: scores, lifecycle transitions, model quality and applied labels.

Each record's :meth:`to_row` returns a dict whose keys are the columns of its
ClickHouse table (``member_scores`` / ``score_history``, ``lifecycle_transitions``,
``model_metrics``); times are aware UTC datetimes in event time. Member ids are
in clear here: the sink replaces them by pseudonyms.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "Trigger",
    "ScoreRecord",
    "LifecycleTransition",
    "ModelMetrics",
    "LabelApplied",
    "Record",
]

Trigger = Literal["event", "silence", "daily"]


def _version(at: datetime) -> int:
    """Microseconds since the epoch: orders a member's records in ReplacingMergeTree."""
    return int(round(at.timestamp() * 1_000_000))


def shallow_dict(record: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict, values as they are: ``dataclasses.asdict`` copies
    every nested value deeply, which cost 2-3 % of a purchases-only replay in ``to_row``."""
    names = _FIELD_NAMES.get(type(record))
    if names is None:
        names = _FIELD_NAMES[type(record)] = tuple(f.name for f in fields(record))
    return {name: getattr(record, name) for name in names}


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


@dataclass(slots=True)
class ScoreRecord:
    """A member's scores at one event-time instant.

    ``conversion_probability`` is None for members with an active policy.
    ``top_drivers`` are the (feature, signed contribution to the churn log-odds)
    pairs with the largest magnitude, largest first. ``churn_model`` says whether
    the recency prior (``"prior"``) or the learned model (``"model"``) produced
    ``churn_probability``; ``model_version`` names it (``churn-prior``,
    ``churn-logreg-v1``...).
    """

    member_id: str
    scored_at: datetime
    trigger: Trigger
    engagement_score: float
    engagement_tier: str
    churn_probability: float
    churn_risk: str
    churn_model: Literal["prior", "model"]
    conversion_probability: float | None
    lifecycle_stage: str
    top_drivers: list[tuple[str, float]]
    model_version: str
    last_event_at: datetime
    community_id: str | None
    annual_premium: float
    active_policies: int

    def to_row(self) -> dict[str, Any]:
        """Columns of ``member_scores`` and ``score_history``."""
        row = shallow_dict(self)
        row["top_drivers"] = [(name, float(value)) for name, value in self.top_drivers]
        row["community_id"] = self.community_id or ""
        row["version"] = _version(self.scored_at)
        return row


@dataclass(slots=True)
class LifecycleTransition:
    """A member moved from one lifecycle stage to another (``from_stage`` "" = first stage).

    ``cause_event_type`` is the event type that caused it, or ``"silence"`` (a
    silence timer) or ``"churn_risk"`` (a score that became high risk).
    """

    member_id: str
    at: datetime
    from_stage: str
    to_stage: str
    cause_event_type: str
    community_id: str | None = None

    def to_row(self) -> dict[str, Any]:
        """Columns of ``lifecycle_transitions``."""
        row = shallow_dict(self)
        row["community_id"] = self.community_id or ""
        return row


@dataclass(slots=True)
class ModelMetrics:
    """Live quality of one model: delayed progressive validation over recent labels.

    ``roc_auc``, ``log_loss``, ``calibration_error`` (expected calibration error
    over 10 equal-width bins) and ``positive_rate`` are None until labels of both
    classes arrived. ``drift_detected`` reports an ADWIN drift on the error stream
    since the previous report; ``promoted`` that the challenger replaced the
    champion (``model_version`` is then the new one).
    """

    model: str
    model_version: str
    at: datetime
    labels_seen: int
    roc_auc: float | None
    log_loss: float | None
    calibration_error: float | None
    positive_rate: float | None
    drift_detected: bool
    promoted: bool

    def to_row(self) -> dict[str, Any]:
        """Columns of ``model_metrics`` (booleans as 0/1)."""
        row = shallow_dict(self)
        row["drift_detected"] = int(self.drift_detected)
        row["promoted"] = int(self.promoted)
        return row


@dataclass(slots=True)
class LabelApplied:
    """A delayed label reached a snapshot; the model scored it, then learned from it.

    ``label`` is 1 for churned / converted, 0 for retained / not converted;
    ``prediction`` is what was served at ``snapshot_at``; ``model_version`` what served it.
    """

    model: str
    member_id: str
    label: int
    snapshot_at: datetime
    label_at: datetime
    prediction: float
    model_version: str = field(default="")

    def to_row(self) -> dict[str, Any]:
        """A flat dict (no ClickHouse table yet: metrics and audits use it)."""
        return shallow_dict(self)


Record = ScoreRecord | LifecycleTransition | ModelMetrics | LabelApplied
