"""The daily batch: every member's latest score is at most a day old and from the model
that serves now, however long the member has been silent."""

from __future__ import annotations

from datetime import timedelta

import pytest
from scoring_fixtures import MakeEvent, day

from scoring.engine import ScoringEngine
from scoring.records import ScoreRecord
from scoring.state import MemberState

pytestmark = pytest.mark.unit


def _latest(records: list[object]) -> dict[str, ScoreRecord]:
    latest: dict[str, ScoreRecord] = {}
    for r in records:
        if isinstance(r, ScoreRecord):
            latest[r.member_id] = r
    return latest


def test_a_batch_scores_every_member_at_the_last_midnight(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    out: list[object] = []
    for member in ("m-1", "m-2", "m-3"):
        out += engine.process(make_event("post_created", member, 0))
    daily: list[ScoreRecord] = []
    for d in range(1, 120):  # only m-1 stays active; m-2 and m-3 fall silent on day 0
        out += engine.process(make_event("post_created", "m-1", d))
        batch = engine.daily_scores(0)  # caught up after each event
        daily += batch
        out += batch
    newest = day(119)
    latest = _latest(out)
    assert set(latest) == {"m-1", "m-2", "m-3"}
    for record in latest.values():
        assert newest - record.scored_at <= timedelta(days=1)
    assert len({r.model_version for r in latest.values()}) == 1
    midnight = (newest - timedelta(hours=1)).replace(hour=0)  # the watermark's midnight
    assert latest["m-2"].trigger == "daily" and latest["m-2"].scored_at == midnight
    assert latest["m-2"].last_event_at == day(0)
    # one batch per midnight, members in id order; m-1, scored by its event after the
    # midnight (inside the allowed lateness), is not scored again
    assert [r.member_id for r in daily[-2:]] == ["m-2", "m-3"]
    assert all(r.member_id != "m-1" for r in daily)
    assert engine.stats.daily_scores == len(daily)
    assert len({(r.member_id, r.scored_at) for r in daily}) == len(daily)
    m2 = [r.churn_probability for r in daily if r.member_id == "m-2"]
    assert m2[-1] > m2[0]  # silence raises the churn probability day by day


def test_the_batch_changes_no_member_state(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("policy_purchased", "m-1", 0))
    engine.advance(0, day(10.5))  # 10 midnights passed in one step
    before = engine.states["m-1"].to_dict()
    batch = engine.daily_scores(0)
    assert [r.scored_at for r in batch] == [day(10.5).replace(hour=0)]
    assert engine.states["m-1"].to_dict() == before
    assert engine.daily_scores(0) == []  # the same day: nothing more
    engine.advance(0, day(10.6))  # still the same day
    assert engine.daily_scores(0) == []


def test_the_day_of_the_last_batch_survives_a_restore(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    engine.advance(0, day(3))
    assert len(engine.daily_scores(0)) == 1
    restored = ScoringEngine()
    for state in engine.states.values():
        restored.load_member(MemberState.from_dict(state.to_dict()), 0)
    restored.restore_models(engine.models_checkpoint())
    restored.advance(0, day(3))
    assert restored.daily_scores(0) == []
    restored.advance(0, day(4))
    assert [(r.trigger, r.scored_at) for r in restored.daily_scores(0)] == [
        ("daily", day(4).replace(hour=0))
    ]


def test_members_who_withdrew_consent_are_not_scored(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    engine.process(make_event("post_created", "m-2", 0))
    engine.process(make_event("consent_changed", "m-1", 0.1, marketing=True, analytics=False))
    engine.advance(0, day(5))
    assert {r.member_id for r in engine.daily_scores(0)} == {"m-2"}


def test_latest_score_is_where_member_scores_has_its_latest_row(make_event: MakeEvent) -> None:
    engine = ScoringEngine()
    engine.process(make_event("post_created", "m-1", 0))
    out = engine.advance(0, day(40)) + engine.daily_scores(0)
    stored = _latest(out)["m-1"]
    assert stored.trigger == "daily"
    served = engine.latest_score("m-1")
    assert (served.trigger, served.scored_at) == (stored.trigger, stored.scored_at)
    assert served.churn_probability == pytest.approx(stored.churn_probability)
