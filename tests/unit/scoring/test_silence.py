"""Silence timers: re-scoring at boundaries, cost proportional to members going silent."""

from __future__ import annotations

import pytest
from scoring_fixtures import MakeEvent, day

from scoring.config import ScoringConfig
from scoring.engine import ScoringEngine
from scoring.records import ScoreRecord
from scoring.state import MemberState

pytestmark = pytest.mark.unit


def _silence_scores(records: list[object]) -> list[ScoreRecord]:
    return [r for r in records if isinstance(r, ScoreRecord) and r.trigger == "silence"]


def test_silent_member_is_rescored_at_each_boundary(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("policy_purchased", "m-1", 0))
    scores = _silence_scores(engine.advance(0, day(200)))
    # the silence boundaries, then the lapsed-label ones (1.5, 2, 3, 4 churn windows)
    assert [s.scored_at for s in scores] == [day(b) for b in (7, 14, 21, 30, 45, 60, 90, 120)]
    churn = [s.churn_probability for s in scores]
    assert churn == sorted(churn) and churn[0] < churn[-1]
    assert scores[-1].last_event_at == day(0)
    assert engine.advance(0, day(400)) == []  # nothing more to do for this member


def test_advance_is_idempotent_and_monotone(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    first = engine.advance(0, day(8))
    assert len(_silence_scores(first)) == 1
    assert engine.advance(0, day(8)) == [] and engine.advance(0, day(3)) == []
    assert engine.watermark(0) == day(8)
    assert engine.watermark(1) is None


def test_activity_resets_the_silence(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    engine.process(make_event("post_created", "m-1", 5))
    scores = _silence_scores(engine.advance(0, day(13)))
    assert [s.scored_at for s in scores] == [day(12)]


def test_cost_is_proportional_to_members_going_silent(make_event: MakeEvent) -> None:
    """10,000 members over 60 days; 10 go silent: only they are touched by timers."""
    # no label snapshots after the first: this test is about timers, not learning
    engine = ScoringEngine(
        ScoringConfig(snapshot_interval_days=1000.0, conversion_snapshot_interval_days=1000.0)
    )
    members = [f"m-{i:05d}" for i in range(10_000)]
    silent = set(members[:10])
    for member in members:
        engine.process(make_event("content_viewed", member, 0))
    for step in range(1, 11):  # every 6 days, all but the silent ten come back
        for member in members:
            if member not in silent:
                engine.process(make_event("content_viewed", member, step * 6.0))
        engine.advance(0, day(step * 6.0))
    records = engine.advance(0, day(60))
    touched = {r.member_id for r in _silence_scores(records)}
    assert touched <= silent
    stats = engine.stats
    # 10 members x boundaries 7, 14, 21, 30, 45, 60, plus their first snapshot's expiry
    assert stats.silence_rescored == 10 * 6
    assert stats.timers_fired <= 10 * 7
    assert stats.timers_deferred == 0


def test_load_member_rebuilds_timers(make_event: MakeEvent) -> None:
    source = ScoringEngine()
    source.process(make_event("post_created", "m-1", 0))
    saved = source.states["m-1"].to_dict()
    target = ScoringEngine()
    target.restore_models(source.models_checkpoint())
    target.load_member(MemberState.from_dict(saved), partition=3)
    expected = _silence_scores(source.advance(0, day(31)))
    restored = _silence_scores(target.advance(3, day(31)))
    assert [r.to_row() for r in restored] == [r.to_row() for r in expected]
    assert len(restored) == 4


def test_erasure_forgets_the_member(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    engine.process(make_event("erasure_requested", "m-1", 1))
    assert "m-1" not in engine.states
    assert engine.advance(0, day(100)) == []
