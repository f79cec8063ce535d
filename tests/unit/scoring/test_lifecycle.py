"""Lifecycle: the funnel, at_risk, lapsed and reactivated, each transition recorded once."""

from __future__ import annotations

import pytest
from scoring_fixtures import MakeEvent, day

from scoring.engine import ScoringEngine
from scoring.lifecycle import Facts, on_event, on_score, on_silence
from scoring.records import LifecycleTransition, ScoreRecord

pytestmark = pytest.mark.unit


def _moves(records: list[object]) -> list[tuple[str, str, str]]:
    return [
        (r.from_stage, r.to_stage, r.cause_event_type)
        for r in records
        if isinstance(r, LifecycleTransition)
    ]


def test_full_journey_through_the_engine(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    seen: list[tuple[str, str, str]] = []
    steps = [
        ("member_joined", 0),
        ("content_viewed", 1),
        ("quote_requested", 2),
        ("application_started", 4),
        ("policy_purchased", 6),
        ("content_viewed", 8),
    ]
    for event_type, at in steps:
        seen += _moves(engine.process(make_event(event_type, "m-1", at)))
    seen += _moves(engine.advance(0, day(60)))
    seen += _moves(engine.process(make_event("post_created", "m-1", 61)))
    seen += _moves(engine.process(make_event("policy_renewed", "m-1", 62)))
    assert seen == [
        ("", "potential", "member_joined"),
        ("potential", "intent", "quote_requested"),
        ("intent", "decision", "application_started"),
        ("decision", "loyal", "policy_purchased"),
        ("loyal", "at_risk", "silence"),
        ("at_risk", "lapsed", "silence"),
        ("lapsed", "reactivated", "post_created"),
        ("reactivated", "loyal", "policy_renewed"),
    ]
    transitions = [r for r in engine.advance(0, day(61)) if isinstance(r, LifecycleTransition)]
    assert transitions == []


def test_at_risk_and_lapsed_happen_at_their_boundaries(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("policy_purchased", "m-1", 0))
    records = engine.advance(0, day(45))
    moves = [(r.to_stage, r.at) for r in records if isinstance(r, LifecycleTransition)]
    assert moves == [("at_risk", day(14)), ("lapsed", day(30))]
    last_score = [r for r in records if isinstance(r, ScoreRecord)][-1]
    assert last_score.lifecycle_stage == "lapsed"


def test_last_policy_lapse_means_lapsed_but_not_with_another_policy(
    make_event: MakeEvent,
) -> None:
    engine = ScoringEngine()
    engine.process(make_event("policy_purchased", "m-1", 0, policy_id="a"))
    engine.process(make_event("policy_purchased", "m-1", 1, policy_id="b"))
    assert _moves(engine.process(make_event("policy_lapsed", "m-1", 2, policy_id="a"))) == []
    assert _moves(engine.process(make_event("policy_cancelled", "m-1", 3, policy_id="b"))) == [
        ("loyal", "lapsed", "policy_cancelled")
    ]


def test_an_unengaged_prospect_is_not_at_risk_but_lapses(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("content_viewed", "m-1", 0))
    moves = _moves(engine.advance(0, day(40)))
    assert moves == [("potential", "lapsed", "silence")]


def test_returning_at_risk_member_recovers(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("policy_purchased", "m-1", 0))
    engine.advance(0, day(15))
    assert engine.states["m-1"].stage == "at_risk"
    moves = _moves(engine.process(make_event("post_created", "m-1", 16)))
    assert moves == [("at_risk", "loyal", "post_created")]


def test_first_event_records_one_entry_transition(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    assert _moves(engine.process(make_event("policy_purchased", "m-1", 0))) == [
        ("", "loyal", "policy_purchased")
    ]


def test_rules_are_pure() -> None:
    risky = Facts(has_policy=True, engaged=False, intent=False, risk_high=True)
    assert on_score("loyal", risky) == ["at_risk"]
    assert on_score("at_risk", risky) == []
    prospect = Facts(has_policy=False, engaged=False, intent=False, risk_high=True)
    assert on_score("potential", prospect) == []
    engaged = Facts(has_policy=False, engaged=True, intent=False, risk_high=False)
    assert on_silence("potential", 14.0, engaged, at_risk_days=14, churn_days=30) == ["at_risk"]
    assert on_event("lapsed", "policy_lapsed", False, True, prospect) == []
    heavy_reader = Facts(has_policy=False, engaged=False, intent=True, risk_high=False)
    assert on_event("potential", "content_viewed", True, False, heavy_reader) == ["intent"]


def test_a_policy_known_from_a_claim_makes_a_member_loyal(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("content_viewed", "m-1", 0))
    moves = _moves(engine.process(make_event("claim_filed", "m-1", 1)))
    assert moves == [("potential", "loyal", "claim_filed")]
    assert engine.states["m-1"].active_policies == 1
