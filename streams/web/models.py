"""Response documents of the HTTP API (pydantic: they are the OpenAPI schemas too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "Problem",
    "HealthDocument",
    "EventResult",
    "CollectorResponse",
    "Driver",
    "MemberScore",
    "MemberListItem",
    "MemberList",
    "RatePoint",
    "FreshnessPoint",
    "AucPoint",
    "StageCount",
    "Conversion",
    "AlertItem",
    "Dashboard",
]


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class HealthDocument(BaseModel):
    """``/healthz``: ok, or unhealthy with the reasons."""

    status: Literal["ok", "unhealthy"]
    reasons: list[str]
    checks: dict[str, Any]


# --- collector --------------------------------------------------------------------
class EventResult(BaseModel):
    """What happened to one event of a ``POST /v1/events`` request (in request order)."""

    index: int = Field(description="position of the event in the request (0-based)")
    status: Literal["accepted", "rejected"]
    event_id: str | None = None
    event_type: str | None = None
    topic: str | None = Field(default=None, description="accepted: the topic it was produced to")
    partition: int | None = None
    offset: int | None = None
    reason: str | None = Field(
        default=None,
        description="rejected: the typed reason (schemas.errors), e.g. schema_violation",
    )
    error_class: str | None = None
    detail: str | None = Field(
        default=None, description="rejected: what is wrong (never the values)"
    )


class CollectorResponse(BaseModel):
    """Per-event answer: accepted events are on their topic (acks=all) before it is sent;
    rejected ones are on the dead-letter topic."""

    accepted: int
    rejected: int
    results: list[EventResult]


# --- members ----------------------------------------------------------------------
class Driver(BaseModel):
    """A feature and its signed contribution to the churn log-odds."""

    feature: str
    contribution: float


class _Scores(BaseModel):
    engagement_score: float = Field(description="0-100, calibrated against the population")
    engagement_tier: str = Field(description="dormant, casual, engaged or champion")
    churn_probability: float
    churn_risk: str = Field(description="low, medium or high")
    conversion_probability: float | None = Field(
        default=None, description="None for members with an active policy"
    )
    lifecycle_stage: str
    top_drivers: list[Driver]
    model_version: str
    as_of: datetime = Field(description="event time of the score")
    last_event_at: datetime
    community_id: str | None = None
    annual_premium: float
    active_policies: int


class MemberScore(_Scores):
    """A member's latest scores."""

    member_id: str
    pseudonym: str = Field(description="HMAC pseudonym: the member's id in ClickHouse")
    source: Literal["worker", "clickhouse"] = Field(
        description="worker: the owning worker's live state; clickhouse: member_scores"
    )


class MemberListItem(_Scores):
    """A member in a call list, by pseudonym (ClickHouse never holds member ids)."""

    pseudonym: str


class MemberList(BaseModel):
    """Members ordered by churn probability, then annual premium (highest first)."""

    churn_risk: str | None
    limit: int
    members: list[MemberListItem]


# --- live page --------------------------------------------------------------------
class RatePoint(BaseModel):
    t: float = Field(description="wall-clock seconds since the epoch")
    events_per_second: float
    rejected_per_second: float


class FreshnessPoint(BaseModel):
    t: float
    p50: float | None = Field(description="seconds from broker timestamp to score")
    p95: float | None


class AucPoint(BaseModel):
    model: str
    at: datetime = Field(description="event time of the model report")
    roc_auc: float


class StageCount(BaseModel):
    stage: str
    members: int


class Conversion(BaseModel):
    members_without_policy: int
    members_with_policy: int
    mean_probability: float | None
    histogram: list[int] = Field(description="members per 0.1-wide conversion-probability bin")


class AlertItem(BaseModel):
    raised_at: datetime
    rule: str
    severity: str
    status: str
    subject_type: str
    subject_id: str = Field(description="member pseudonym or community id")
    value: float
    threshold: float


class Dashboard(BaseModel):
    """Everything the live page shows, computed at most once a second."""

    generated_at: float
    events_total: float
    events_per_second: float
    freshness_p95_seconds: float | None
    members_scored: int
    rate: list[RatePoint]
    freshness: list[FreshnessPoint]
    engagement_tiers: dict[str, int]
    churn_risk: dict[str, int]
    lifecycle: list[StageCount]
    conversion: Conversion
    model_auc: list[AucPoint]
    alerts: list[AlertItem]
