"""Per-area fixtures for scoring tests: typed events built on injected event time.

Imported by name (``from scoring_fixtures import ...``); ``conftest.py`` exposes the fixture.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from schemas.envelope import EventBase
from schemas.registry import EVENT_MODELS

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

DEFAULT_PROPS: dict[str, dict[str, Any]] = {
    "member_joined": {},
    "member_left": {},
    "post_created": {"post_id": "p-1"},
    "comment_created": {"post_id": "p-1", "comment_id": "c-1"},
    "reaction_added": {"target_id": "p-1", "reaction": "like"},
    "content_viewed": {"content_id": "a-1", "content_type": "article", "dwell_seconds": 30.0},
    "content_shared": {"content_id": "a-1", "share_channel": "link"},
    "quiz_answered": {"quiz_id": "q-1", "questions": 5, "correct": 4},
    "live_session_attended": {"session_id": "s-1", "minutes_attended": 20.0},
    "points_earned": {"points": 10, "reason": "checkin"},
    "points_redeemed": {"points": 100, "reward": "coupon"},
    "referral_sent": {"referral_id": "r-1"},
    "referral_converted": {"referral_id": "r-1"},
    "review_posted": {"rating": 4, "subject": "community"},
    "survey_answered": {"nps": 9},
    "consent_changed": {"marketing": False},
    "erasure_requested": {},
    "quote_requested": {"quote_id": "q-1", "product_line": "health"},
    "application_started": {"application_id": "a-1", "product_line": "health"},
    "policy_purchased": {
        "policy_id": "pol-1",
        "product_line": "health",
        "premium": 1200.0,
        "currency": "CNY",
    },
    "policy_renewed": {
        "policy_id": "pol-1",
        "product_line": "health",
        "premium": 1250.0,
        "currency": "CNY",
    },
    "policy_cancelled": {"policy_id": "pol-1", "product_line": "health", "reason": "price"},
    "policy_lapsed": {"policy_id": "pol-1", "product_line": "health"},
    "claim_filed": {
        "claim_id": "cl-1",
        "policy_id": "pol-1",
        "product_line": "health",
        "amount": 500.0,
        "currency": "CNY",
    },
    "claim_settled": {
        "claim_id": "cl-1",
        "policy_id": "pol-1",
        "product_line": "health",
        "amount_paid": 0.0,
        "currency": "CNY",
        "outcome": "denied",
    },
}

MakeEvent = Callable[..., EventBase]


def day(n: float) -> datetime:
    """``T0`` plus ``n`` days."""
    return T0 + timedelta(days=n)


def event_factory() -> MakeEvent:
    """``make_event(event_type, member_id, at, **properties)``: a typed event, fresh id."""
    ids = itertools.count(1)

    def build(
        event_type: str,
        member_id: str = "m-1",
        at: datetime | float = 0.0,
        *,
        event_id: int | None = None,
        community_id: str | None = "c-1",
        channel: str = "app",
        **properties: Any,
    ) -> EventBase:
        when = day(at) if isinstance(at, int | float) else at
        return EVENT_MODELS[event_type](
            event_id=UUID(int=next(ids) if event_id is None else event_id),
            event_type=event_type,
            occurred_at=when,
            member_id=member_id,
            community_id=community_id,
            channel=channel,
            properties={**DEFAULT_PROPS[event_type], **properties},
        )

    return build
