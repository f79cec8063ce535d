"""MemberState: exact JSON round trip, the idempotency ring, bounded collections."""

from __future__ import annotations

import json

import pytest
from scoring_fixtures import MakeEvent, day

from scoring.config import ScoringConfig
from scoring.engine import ScoringEngine
from scoring.state import _PLAIN, MemberState, unpack

pytestmark = pytest.mark.unit

STORY = [
    ("member_joined", 0),
    ("content_viewed", 1),
    ("quote_requested", 2),
    ("survey_answered", 3),
    ("points_earned", 3.5),
    ("points_redeemed", 4),
    ("policy_purchased", 5),
    ("claim_filed", 20),
    ("claim_settled", 25),
    ("review_posted", 26),
    ("referral_sent", 27),
    ("consent_changed", 28),
]


def _rich_state(make_event: MakeEvent) -> MemberState:
    engine = ScoringEngine(ScoringConfig(snapshot_interval_days=1.0))
    for event_type, at in STORY:
        engine.process(make_event(event_type, "m-1", at))
    engine.advance(0, day(40))  # silence boundaries, expired labels
    return engine.states["m-1"]


def test_round_trip_is_exact_through_json(make_event: MakeEvent) -> None:
    state = _rich_state(make_event)
    data = state.to_dict()
    assert state.pending and state.policies and state.recent_ids  # the test covers them
    restored = MemberState.from_dict(json.loads(json.dumps(data)))
    assert restored.to_dict() == data
    assert restored == state


def test_from_dict_tolerates_missing_fields(make_event: MakeEvent) -> None:
    data = _rich_state(make_event).to_dict()
    for key in ("channels", "last_redeem_points", "pending", "stage"):
        data.pop(key)
    restored = MemberState.from_dict(data)
    assert restored.channels == {} and restored.pending == [] and restored.stage == ""


def test_state_from_a_version_with_fewer_kinds_keeps_its_history(
    make_event: MakeEvent,
) -> None:
    data = _rich_state(make_event).to_dict()
    # as saved before the last kind existed (and before the floats were packed)
    data["decayed"] = unpack("d", data["decayed"]).tolist()[:-3]
    restored = MemberState.from_dict(data)
    assert restored.decayed[:-3] == data["decayed"] and restored.decayed[-3:] == [0.0] * 3


def _as_written_before_issue_9(state: MemberState) -> dict[str, object]:
    """The record format before issue 9: every field, numbers as JSON lists."""
    data: dict[str, object] = {name: getattr(state, name) for name in _PLAIN}
    data.update(
        v=1,
        communities=list(state.communities),
        decayed=list(state.decayed),
        active_days=state.active_days.tolist(),
        channels=dict(state.channels),
        policies={k: list(v) for k, v in state.policies.items()},
        open_claims=list(state.open_claims),
        ended_policies=list(state.ended_policies),
        pending=[{**s.to_dict(), "features": s.features.tolist()} for s in state.pending],
        recent_ids=state.recent_ids.tolist(),
    )
    return data


def test_a_record_in_the_earlier_format_restores_the_same_state(make_event: MakeEvent) -> None:
    state = _rich_state(make_event)
    old = json.loads(json.dumps(_as_written_before_issue_9(state)))
    assert isinstance(old["pending"][0]["features"], list) and "lapses" in old
    assert MemberState.from_dict(old) == state


def test_a_record_leaves_out_default_fields_and_packs_its_numbers() -> None:
    """Issue 9 (state, restore): a fresh member's record holds only what is not a
    default, and the float vectors and event-id digests are packed, not JSON lists."""
    state = MemberState("m-1", 1_700_000_000.0)
    state.remember(2**63 + 5)
    data = state.to_dict()
    assert sorted(data) == [
        "decay_ref",
        "decayed",
        "engagement_binned_at",
        "first_seen_at",
        "last_event_at",
        "member_id",
        "recent_ids",
        "stage_since",
        "v",
    ]
    assert isinstance(data["decayed"], str) and isinstance(data["recent_ids"], str)
    assert MemberState.from_dict(json.loads(json.dumps(data))) == state


def test_ring_is_bounded_and_forgets_oldest() -> None:
    state = MemberState("m", 0.0)
    for digest in range(100):
        state.remember(digest, capacity=64)
    assert len(state.recent_ids) == 64
    assert not state.seen(35) and state.seen(36) and state.seen(99)


def test_state_keeps_the_business_facts(make_event: MakeEvent) -> None:
    state = _rich_state(make_event)
    assert state.active_policies == 1 and state.annual_premium == 1200.0
    assert state.claims_denied == 1 and state.last_nps == 9 and state.consent_marketing is False
    assert state.points_redeemed == 100.0 and state.quotes == 1
    assert state.communities == ["c-1"]
