"""Applying an event twice changes nothing: state, models, outputs."""

from __future__ import annotations

import pytest
from scoring_fixtures import MakeEvent

from scoring.engine import ScoringEngine

pytestmark = pytest.mark.unit


def test_same_event_twice_gives_identical_state(make_event: MakeEvent) -> None:
    once, twice = ScoringEngine(), ScoringEngine()
    events = [make_event(t, "m-1", i) for i, t in enumerate(["member_joined", "post_created"])]
    events.append(make_event("policy_purchased", "m-1", 3))
    for event in events:
        once.process(event)
        first = twice.process(event)
        assert first
        assert twice.process(event) == []
    assert twice.states["m-1"].to_dict() == once.states["m-1"].to_dict()
    assert twice.models_checkpoint() == once.models_checkpoint()
    assert twice.stats.duplicates == 3


def test_replay_of_a_whole_history_is_a_no_op(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    events = [make_event("content_viewed", f"m-{i % 3}", i * 0.5) for i in range(30)]
    for event in events:
        engine.process(event)
    before = {m: s.to_dict() for m, s in engine.states.items()}
    models = engine.models_checkpoint()
    assert all(engine.process(event) == [] for event in events)
    assert {m: s.to_dict() for m, s in engine.states.items()} == before
    assert engine.models_checkpoint() == models


def test_different_ids_same_content_both_apply(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    engine.process(make_event("post_created", "m-1", 0))
    assert engine.states["m-1"].event_count == 2
