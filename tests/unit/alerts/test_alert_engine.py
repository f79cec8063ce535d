"""Alert engine semantics: hysteresis, dwell, cooldown, dedup, checkpoints, community rules."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from alerts_helpers import T0, at, ruleset, score

from scoring.alerts import AlertEngine, AlertRecord, alert_id, default_rules

pytestmark = pytest.mark.unit

CHURN = {"name": "churn", "kind": "churn_risk", "enter": 0.7, "leave": 0.5}


def statuses(alerts: list[AlertRecord]) -> list[str]:
    return [a.status for a in alerts]


def churn_engine(**extra: object) -> AlertEngine:
    return AlertEngine(ruleset(**{**CHURN, **extra}))


def test_churn_fires_and_resolves() -> None:
    engine = churn_engine(min_annual_premium=3000)
    [fired] = engine.on_score(score(at(0), churn_probability=0.8))
    assert (fired.status, fired.subject_type, fired.subject_id) == ("fired", "member", "m1")
    assert (fired.value, fired.threshold, fired.raised_at) == (0.8, 0.7, at(0))
    assert fired.context["annual_premium"] == 5000.0
    assert engine.active() == {("churn", "warning"): 1}
    [resolved] = engine.on_score(score(at(1), churn_probability=0.45))
    assert (resolved.status, resolved.threshold, resolved.episode_start) == ("resolved", 0.5, at(0))
    assert engine.active() == {("churn", "warning"): 0}


def test_churn_ignores_members_below_min_premium() -> None:
    engine = churn_engine(min_annual_premium=3000)
    assert engine.on_score(score(at(0), churn_probability=0.9, annual_premium=1000)) == []


def test_hysteresis_no_refire_inside_band() -> None:
    engine = churn_engine()
    out = []
    for hour, p in enumerate([0.8, 0.6, 0.75, 0.55, 0.9, 0.51, 0.5, 0.6, 0.72]):
        out += engine.on_score(score(at(hour), churn_probability=p))
    assert statuses(out) == ["fired", "resolved", "fired"]
    assert [a.raised_at for a in out] == [at(0), at(6), at(8)]


def test_dwell_fires_on_advance_at_start_plus_dwell() -> None:
    engine = churn_engine(dwell_minutes=60)
    assert engine.on_score(score(at(0), churn_probability=0.8)) == []
    assert engine.on_score(score(at(0.5), churn_probability=0.65)) == []
    assert engine.advance(at(0.9)) == []
    [fired] = engine.advance(at(2))
    assert (fired.status, fired.raised_at, fired.episode_start) == ("fired", at(1), at(0))
    assert fired.value == 0.65  # the latest observed value
    assert engine.advance(at(3)) == []


def test_dwell_fires_on_a_later_score_and_is_cancelled_by_leave() -> None:
    engine = churn_engine(dwell_minutes=60)
    engine.on_score(score(at(0), churn_probability=0.8))
    assert statuses(engine.on_score(score(at(1.5), churn_probability=0.8))) == ["fired"]
    other = churn_engine(dwell_minutes=60)
    other.on_score(score(at(0), churn_probability=0.8))
    assert other.on_score(score(at(0.5), churn_probability=0.4)) == []  # no resolve: never fired
    assert other.advance(at(5)) == []


def test_cooldown_blocks_a_new_episode() -> None:
    engine = churn_engine(cooldown_hours=24)
    first = engine.on_score(score(at(0), churn_probability=0.8))
    engine.on_score(score(at(1), churn_probability=0.3))
    assert engine.on_score(score(at(2), churn_probability=0.9)) == []
    assert engine.on_score(score(at(24), churn_probability=0.9)) == []
    [again] = engine.on_score(score(at(25), churn_probability=0.9))
    assert again.episode_start == at(25) and again.alert_id != first[0].alert_id


def test_same_or_older_record_is_ignored() -> None:
    engine = churn_engine()
    record = score(at(5), churn_probability=0.8)
    assert len(engine.on_score(record)) == 1
    assert engine.on_score(record) == []
    assert engine.on_score(score(at(4), churn_probability=0.1)) == []  # late: no resolve
    assert engine.active() == {("churn", "warning"): 1}


def test_round_trip_mid_episode_gives_no_duplicate() -> None:
    rules = default_rules()
    engine = AlertEngine(rules)
    record = score(at(0), churn_probability=0.8, engagement_score=80.0)
    engine.on_score(record)
    engine.on_score(score(at(1), churn_probability=0.9, engagement_score=40.0))
    engine.on_survey("c1", 2, at(2))
    state = json.loads(json.dumps(engine.to_dict()))
    restored = AlertEngine.from_dict(rules, state)
    assert restored.to_dict() == engine.to_dict()
    assert restored.active() == engine.active()
    assert restored.on_score(record) == []
    assert restored.on_score(score(at(3), churn_probability=0.95, engagement_score=40)) == []
    [resolved] = restored.on_score(score(at(4), churn_probability=0.2, engagement_score=40))
    assert resolved.rule == "churn_risk_premium" and resolved.episode_start == at(0)


def split_round_trip(engine: AlertEngine, rules: object) -> AlertEngine:
    """Restore from the engine's own share plus each touched member's share, as a task
    does (members loaded in an order other than the live one)."""
    whole = engine.to_dict()
    held = set(whole["members"]).union(*whole["episodes"].values())
    engine.drain_touched()
    members = sorted(held, reverse=True)
    own = json.loads(json.dumps(engine.to_dict(members=False)))
    shares = {m: json.loads(json.dumps(engine.member_state(m))) for m in members}
    restored = AlertEngine.from_dict(rules, own)  # type: ignore[arg-type]
    for member, share in shares.items():
        restored.load_member(member, share)
    return restored


def test_member_shares_and_the_engine_share_restore_the_whole_engine() -> None:
    rules = default_rules()
    engine = AlertEngine(rules)
    engine.on_score(score(at(0), "a", churn_probability=0.8, engagement_score=80.0))
    engine.on_score(score(at(1), "a", churn_probability=0.9, engagement_score=40.0))
    engine.on_score(score(at(2), "b", engagement_score=70.0, community_id="c2"))
    engine.on_score(score(at(3), "c", engagement_score=20.0))
    engine.on_survey("c1", 2, at(2))
    assert "members" not in engine.to_dict(members=False)
    restored = split_round_trip(engine, rules)
    assert restored.to_dict() == engine.to_dict()
    assert restored.active() == engine.active()
    later = [score(at(30), m, churn_probability=0.1, engagement_score=50.0) for m in "abc"]
    assert [restored.on_score(r) for r in later] == [engine.on_score(r) for r in later]
    assert restored.advance(at(days=9)) == engine.advance(at(days=9))


def test_a_member_share_holds_only_days_still_open_and_forget_drops_it() -> None:
    rules = ruleset(**COMMUNITY, min_baseline_days=1)
    engine = AlertEngine(rules)
    engine.on_score(score(at(0), "a", engagement_score=60.0))
    share = engine.member_state("a")
    engine.advance(at(days=1))  # day 0 closes: the share written before still names it
    restored = AlertEngine.from_dict(rules, engine.to_dict(members=False))
    restored.load_member("a", share)
    assert restored.to_dict() == engine.to_dict()
    engine.on_score(score(at(days=1), "a", engagement_score=60.0))
    engine.on_score(score(at(1, 1), "b", engagement_score=30.0))
    engine.forget("a")  # erased: no longer counted in the open day
    assert engine.member_state("a") is None and "a" in engine.drain_touched()
    assert engine.to_dict()["days"] == {"2024-05-07": {"c1": {"b": 30.0}}}
    engine.forget("b")
    assert engine.to_dict()["days"] == {}


def test_a_whole_engine_checkpoint_reports_every_member_due_for_its_own_record() -> None:
    rules = default_rules()
    engine = AlertEngine(rules)
    engine.on_score(score(at(0), "a", churn_probability=0.8))
    engine.on_score(score(at(0), "b"))
    restored = AlertEngine.from_dict(rules, json.loads(json.dumps(engine.to_dict())))
    assert restored.drain_touched() == {"a", "b"}


def test_alert_ids_are_deterministic() -> None:
    runs = []
    for _ in range(2):
        engine = churn_engine()
        out = engine.on_score(score(at(0), churn_probability=0.8))
        out += engine.on_score(score(at(1), churn_probability=0.1))
        runs.append([a.alert_id for a in out])
    assert runs[0] == runs[1] and runs[0][0] != runs[0][1]
    key = f"churn|member|m1|{at(0).isoformat()}|fired"
    assert runs[0][0] == hashlib.sha256(key.encode()).hexdigest()[:32]
    assert runs[0][0] == alert_id("churn", "member", "m1", at(0), "fired")


def test_engagement_drop_fires_within_window_and_resolves() -> None:
    rule = {"name": "drop", "kind": "engagement_drop", "points": 30, "days": 14}
    engine = AlertEngine(ruleset(**rule, leave_points=15))
    assert engine.on_score(score(at(days=0), engagement_score=80)) == []
    assert engine.on_score(score(at(days=3), engagement_score=70)) == []
    [fired] = engine.on_score(score(at(days=5), engagement_score=45))
    assert fired.value == 35 and fired.context["window_max"] == 80
    assert engine.on_score(score(at(days=6), engagement_score=60)) == []  # drop 20 >= 15
    assert statuses(engine.on_score(score(at(days=7), engagement_score=70))) == ["resolved"]
    slow = AlertEngine(ruleset(**rule))
    slow.on_score(score(at(days=0), engagement_score=80))
    assert slow.on_score(score(at(days=20), engagement_score=45)) == []  # max is out of window


def test_lifecycle_regression() -> None:
    rule = {"name": "regress", "kind": "lifecycle_regression"}
    engine = AlertEngine(ruleset(**rule, from_stages=["loyal"], to_stage="at_risk"))
    engine.on_score(score(at(0), lifecycle_stage="loyal"))
    [fired] = engine.on_score(score(at(1), lifecycle_stage="at_risk"))
    assert fired.context["previous_stage"] == "loyal"
    assert fired.context["current_stage"] == "at_risk"
    assert engine.on_score(score(at(2), lifecycle_stage="at_risk")) == []
    assert statuses(engine.on_score(score(at(3), lifecycle_stage="reactivated"))) == ["resolved"]
    engine.on_score(score(at(0), "m2", lifecycle_stage="potential"))
    assert engine.on_score(score(at(1), "m2", lifecycle_stage="at_risk")) == []


COMMUNITY = {"name": "community_drop", "kind": "community_engagement_drop", "percent": 30}


def feed_days(engine: AlertEngine, values: list[float], start: int = 0) -> list[AlertRecord]:
    out = []
    for offset, value in enumerate(values):
        day = start + offset
        engine.on_score(score(at(days=day), "a", engagement_score=value))
        engine.on_score(score(at(1, day), "b", engagement_score=value))
        out += engine.advance(at(days=day + 1))
    return out


def test_community_baseline_drop_fires_and_resolves() -> None:
    engine = AlertEngine(ruleset(**COMMUNITY, min_baseline_days=7, leave_percent=10))
    assert feed_days(engine, [60.0] * 10) == []
    [fired] = feed_days(engine, [30.0], start=10)
    assert (fired.subject_type, fired.subject_id, fired.value) == ("community", "c1", 50.0)
    assert fired.context["baseline"] == 60.0 and fired.context["members"] == 2
    assert fired.raised_at == (T0 + timedelta(days=11)).replace(hour=0)
    assert feed_days(engine, [50.0], start=11) == []  # ~15% below: inside the band
    assert statuses(feed_days(engine, [58.0], start=12)) == ["resolved"]


def test_community_needs_min_baseline_days() -> None:
    engine = AlertEngine(ruleset(**COMMUNITY, min_baseline_days=7))
    assert feed_days(engine, [60.0] * 3 + [10.0]) == []


def test_community_day_mean_is_per_member_latest_score() -> None:
    engine = AlertEngine(ruleset(**COMMUNITY, min_baseline_days=1))
    feed_days(engine, [60.0])
    engine.on_score(score(at(days=1), "a", engagement_score=90))
    engine.on_score(score(at(2, 1), "a", engagement_score=20))
    engine.on_score(score(at(3, 1), "b", engagement_score=20))
    [fired] = engine.advance(at(days=2))
    assert fired.context["index"] == 20.0


def test_weekly_nps_fires_and_resolves() -> None:
    rule = {"name": "community_nps", "kind": "community_nps_low", "enter": 0, "leave": 10}
    engine = AlertEngine(ruleset(**rule, min_responses=3))
    for nps in (2, 3, 9):
        assert engine.on_survey("c1", nps, at(days=1)) == []
    engine.on_survey("c2", 0, at(days=1))  # too few answers
    assert engine.advance(at(days=6)) == []  # the week is still open
    [fired] = engine.advance(at(days=7))
    assert (fired.subject_id, round(fired.value, 2), fired.context["responses"]) == (
        "c1",
        -33.33,
        3,
    )
    for nps in (10, 9, 8):
        engine.on_survey("c1", nps, at(days=8))
    engine.on_survey("c1", 5, at(days=2))  # late: its week is closed
    [resolved] = engine.advance(at(days=14))
    assert resolved.status == "resolved" and resolved.value == pytest.approx(66.67, abs=0.01)
    with pytest.raises(ValueError, match="0..10"):
        engine.on_survey("c1", 11, at(days=15))


def test_to_row_and_active_gauge() -> None:
    engine = AlertEngine(default_rules())
    [alert] = engine.on_score(score(at(0), churn_probability=0.9))
    row = alert.to_row()
    assert json.loads(row["context"])["top_drivers"] == [["days_since_last_event", 1.2]]
    assert row["webhook"] == "" and row["severity"] == "critical"
    assert engine.active()[("churn_risk_premium", "critical")] == 1
    assert engine.active()[("community_nps_negative", "info")] == 0


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        churn_engine().advance(at(0).replace(tzinfo=None))


def test_the_clock_and_the_active_counts_follow_every_episode_change() -> None:
    """advance looks only at episodes it can change, active() keeps counts: both must
    agree with the episodes themselves after any sequence of scores and restores."""
    import random

    rules = ruleset(**CHURN, dwell_minutes=30, cooldown_hours=2)
    engine = AlertEngine(rules)
    rng = random.Random(11)
    for step in range(600):
        member = f"m{rng.randrange(12)}"
        engine.on_score(score(at(step / 6), member, churn_probability=rng.random()))
        engine.advance(at(step / 6 + 0.01))
        if step % 97 == 0:
            engine = split_round_trip(engine, rules)
        if step % 131 == 0:
            engine.forget(f"m{rng.randrange(12)}")
        episodes = engine.to_dict()["episodes"]["churn"]
        fired = sum(1 for _, is_fired, *_ in episodes.values() if is_fired)
        assert engine.active() == {("churn", "warning"): fired}
        waiting = {m for m, (_, is_fired, *_) in episodes.items() if not is_fired}
        assert engine._waiting["churn"] == waiting
