"""Valid events of every type, and the broken lines a replay must reject."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.registry import EVENT_TYPES

PROPERTIES: dict[str, dict[str, Any]] = {
    "member_joined": {"via_referral": False},
    "member_left": {"reason": "other"},
    "post_created": {"post_id": "p-1", "topic": "health", "length_chars": 120},
    "comment_created": {"post_id": "p-1", "comment_id": "c-1", "length_chars": 40},
    "reaction_added": {"target_id": "p-1", "reaction": "helpful"},
    "content_viewed": {"content_id": "a-1", "content_type": "article", "dwell_seconds": 30.5},
    "content_shared": {"content_id": "a-1", "share_channel": "wechat"},
    "quiz_answered": {"quiz_id": "q-1", "questions": 5, "correct": 4},
    "live_session_attended": {"session_id": "s-1", "minutes_attended": 25},
    "points_earned": {"points": 50, "reason": "quiz"},
    "points_redeemed": {"points": 200, "reward": "voucher"},
    "referral_sent": {"referral_id": "r-1"},
    "referral_converted": {"referral_id": "r-1"},
    "review_posted": {"rating": 4, "subject": "product", "length_chars": 200},
    "survey_answered": {"nps": 9},
    "consent_changed": {"marketing": True, "analytics": True},
    "erasure_requested": {},
    "quote_requested": {"quote_id": "qt-1", "product_line": "health", "estimated_premium": 3000},
    "application_started": {"application_id": "ap-1", "product_line": "health"},
    "policy_purchased": {
        "policy_id": "pol-1",
        "product_line": "health",
        "premium": 3200.0,
        "currency": "CNY",
    },
    "policy_renewed": {
        "policy_id": "pol-1",
        "product_line": "health",
        "premium": 3300.0,
        "currency": "CNY",
    },
    "policy_cancelled": {"policy_id": "pol-1", "product_line": "health", "reason": "price"},
    "policy_lapsed": {"policy_id": "pol-1", "product_line": "health"},
    "claim_filed": {
        "claim_id": "cl-1",
        "policy_id": "pol-1",
        "product_line": "health",
        "amount": 800.0,
        "currency": "CNY",
    },
    "claim_settled": {
        "claim_id": "cl-1",
        "policy_id": "pol-1",
        "product_line": "health",
        "amount_paid": 800.0,
        "currency": "CNY",
        "outcome": "paid",
    },
}
assert set(PROPERTIES) == set(EVENT_TYPES)


def event(
    event_type: str,
    member_id: str = "m-1",
    occurred_at: datetime | None = None,
    *,
    community_id: str | None = "c-health",
    event_id: str | None = None,
    **properties: Any,
) -> dict[str, Any]:
    """A valid event dict of ``event_type``."""
    when = occurred_at or datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": when.isoformat(),
        "member_id": member_id,
        "community_id": community_id,
        "channel": "app",
        "schema_version": "1.0",
        "properties": {**PROPERTIES[event_type], **properties},
    }


def replay_lines(valid: int, broken: int, *, seed: int = 1) -> list[bytes]:
    """``valid`` events cycling through every type, and ``broken`` lines of five kinds."""
    rng = uuid.UUID(int=seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    lines: list[bytes] = []
    for i in range(valid):
        event_type = EVENT_TYPES[i % len(EVENT_TYPES)]
        doc = event(
            event_type,
            f"m-{i % 400:04d}",
            start + timedelta(minutes=7 * i),
            event_id=str(uuid.uuid5(rng, f"valid-{i}")),
        )
        lines.append(json.dumps(doc).encode())
    future = datetime.now(UTC) + timedelta(days=2)
    for i in range(broken):
        kind = i % 5
        # members of their own: an erasure request among the valid events deletes all of
        # its member's rows, failures included
        member = f"b-{i % 400:04d}"
        if kind == 0:
            line = b'{"event_id": "broken-json", "event_type": '  # truncated JSON
        elif kind == 1:
            line = json.dumps(
                {**event("post_created", member), "event_type": "teleported"}
            ).encode()
        elif kind == 2:
            doc = event("survey_answered", member)
            doc["properties"] = {"nps": "eleven"}  # wrong type
            line = json.dumps(doc).encode()
        elif kind == 3:
            line = json.dumps(event("content_viewed", member, future)).encode()
        else:
            doc = event("post_created", member)
            doc["padding"] = "x" * 70_000  # oversize
            line = json.dumps(doc).encode()
        lines.append(line)
    # interleave so rejects are spread through the stream
    step = max(1, len(lines) // max(broken, 1))
    ordered = lines[:valid]
    for j, bad in enumerate(lines[valid:]):
        ordered.insert(min(len(ordered), j * step + j), bad)
    return ordered
