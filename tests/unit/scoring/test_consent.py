"""Consent: analytics=false forgets the member and drops their behaviour from then on;
analytics=true starts again from scratch; marketing=false keeps them out of webhooks."""

from __future__ import annotations

import pytest
from scoring_fixtures import MakeEvent, day

from scoring.engine import ScoringEngine
from scoring.errors import UnknownMember
from scoring.records import LabelApplied, ScoreRecord
from scoring.state import MemberState, unpack

pytestmark = pytest.mark.unit


def _about(records: list[object], member: str) -> list[object]:
    return [r for r in records if getattr(r, "member_id", None) == member]


def _active(engine: ScoringEngine, make_event: MakeEvent, member: str, days: range) -> None:
    for d in days:
        engine.process(make_event("post_created", member, d))


def test_analytics_withdrawn_stops_scoring_and_learning(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    _active(engine, make_event, "m-1", range(0, 20))  # snapshots waiting for churn labels
    _active(engine, make_event, "m-2", range(0, 20))
    assert engine.states["m-1"].pending  # labels the models would learn from
    out = engine.process(make_event("consent_changed", "m-1", 20, marketing=True, analytics=False))
    assert _about(out, "m-1") == []
    assert engine.opted_out("m-1") and not engine.opted_out("m-2")

    later = engine.process(make_event("post_created", "m-1", 21))
    later += engine.process(make_event("policy_purchased", "m-1", 22))
    later += engine.advance(0, day(200))  # silence timers, churn windows closing
    assert _about(later, "m-1") == []  # no score, transition or label from m-1 again
    assert engine.stats.opted_out == 2
    assert any(isinstance(r, LabelApplied) for r in _about(later, "m-2"))  # others go on
    with pytest.raises(UnknownMember):
        engine.score_member("m-1", day(200))


def test_only_a_small_marker_is_kept(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    _active(engine, make_event, "m-1", range(0, 10))
    engine.process(make_event("policy_purchased", "m-1", 10))
    engine.process(make_event("consent_changed", "m-1", 11, marketing=False, analytics=False))
    marker = engine.states["m-1"].to_dict()
    assert set(marker) == {
        "v",
        "member_id",
        "first_seen_at",
        "consent_marketing",
        "recent_ids",
        "opted_out",
    }
    # the consent event, so a redelivery is a duplicate
    assert len(unpack("Q", marker["recent_ids"])) == 1


def test_a_redelivered_opt_out_is_a_duplicate(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    consent = make_event("consent_changed", "m-1", 1, analytics=False)
    engine.process(consent)
    assert engine.process(consent) == [] and engine.stats.duplicates == 1
    assert engine.opted_out("m-1")


def test_the_marker_survives_a_checkpoint(make_event: MakeEvent) -> None:
    """Restored on another worker (or after a restart), the marker still drops events."""
    source = ScoringEngine()
    source.process(make_event("post_created", "m-1", 0))
    source.process(make_event("consent_changed", "m-1", 1, analytics=False))
    target = ScoringEngine()
    target.load_member(MemberState.from_dict(source.states["m-1"].to_dict()), partition=0)
    assert target.opted_out("m-1")
    assert _about(target.process(make_event("post_created", "m-1", 2)), "m-1") == []
    assert _about(target.advance(0, day(100)), "m-1") == []  # no timer was scheduled


def test_analytics_given_again_starts_from_scratch(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    _active(engine, make_event, "m-1", range(0, 10))
    engine.process(make_event("consent_changed", "m-1", 10, analytics=False))
    engine.process(make_event("post_created", "m-1", 11))  # dropped
    back = engine.process(make_event("consent_changed", "m-1", 12, marketing=True, analytics=True))
    assert not engine.opted_out("m-1")
    assert [type(r).__name__ for r in back][-1] == "ScoreRecord"
    engine.process(make_event("post_created", "m-1", 13))
    state = engine.states["m-1"]
    assert state.first_seen_at == day(12).timestamp()  # nothing from before the opt-out
    assert state.event_count == 2 and state.activity_count == 1


def test_marketing_consent_decides_webhooks(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    assert engine.marketing_allowed("m-1")
    engine.process(make_event("consent_changed", "m-1", 1, marketing=False, analytics=True))
    assert not engine.marketing_allowed("m-1")
    scores = engine.process(make_event("post_created", "m-1", 2))
    assert any(isinstance(r, ScoreRecord) for r in scores)  # analytics still given: scored
    engine.process(make_event("consent_changed", "m-1", 3, marketing=True, analytics=True))
    assert engine.marketing_allowed("m-1")
    assert not engine.marketing_allowed("nobody")  # unknown (or erased): nothing goes out


def test_erasure_removes_the_marker_too(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    engine.process(make_event("consent_changed", "m-1", 1, analytics=False))
    engine.process(make_event("erasure_requested", "m-1", 2))
    assert "m-1" not in engine.states and not engine.opted_out("m-1")
