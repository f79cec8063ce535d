"""Community rules over shares from every partition: the whole community, not a slice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scoring.alerts.community import CommunityAggregator
from scoring.alerts.engine import AlertEngine
from scoring.alerts.rules import RuleSet
from scoring.records import ScoreRecord

pytestmark = pytest.mark.unit

RULES = RuleSet.parse(
    {
        "rules": [
            {
                "name": "community_engagement_drop",
                "kind": "community_engagement_drop",
                "severity": "warning",
                "percent": 30,
                "baseline_days": 7,
                "min_baseline_days": 3,
            }
        ]
    }
)
T0 = datetime(2026, 3, 2, 8, tzinfo=UTC)


def _score(member: str, at: datetime, engagement: float) -> ScoreRecord:
    return ScoreRecord(
        member,
        at,
        "event",
        engagement,
        "engaged",
        0.1,
        "low",
        "model",
        None,
        "loyal",
        [],
        "v1",
        at,
        "c1",
        0.0,
        0,
    )


def _days() -> list[list[tuple[str, float]]]:
    """Six lively days for eight members, then a day where only two post, weakly."""
    lively = [(f"m{i}", 60.0 + i) for i in range(8)]
    return [lively] * 6 + [[("m0", 12.0), ("m5", 15.0)]]


def _one_engine() -> list[tuple[str, str]]:
    engine = AlertEngine(RULES)
    out = []
    for day, scores in enumerate(_days()):
        for member, value in scores:
            out += engine.on_score(_score(member, T0 + timedelta(days=day), value))
    out += engine.advance(T0 + timedelta(days=8))
    return [(a.rule, a.status) for a in out]


def _spread_over(partitions: int) -> list[tuple[str, str]]:
    """The same scores, members split over partitions: each forwards its shares."""
    engines = [AlertEngine(RULES, forward_community=True) for _ in range(partitions)]
    aggregator = CommunityAggregator(RULES, sources=partitions)
    for day, scores in enumerate(_days()):
        for member, value in scores:
            engines[int(member[1:]) % partitions].on_score(
                _score(member, T0 + timedelta(days=day), value)
            )
    out = []
    for source, engine in enumerate(engines):
        assert engine.advance(T0 + timedelta(days=8)) == []  # nothing evaluated locally
        for kind, period, community, values in engine.drain_closed():
            aggregator.share(kind, period, community, source=source, values=values)
        aggregator.watermark(source, engine.watermark, quiet=False)
        if source < partitions - 1:
            assert aggregator.close() == []  # a source has not said how far it is
    out += aggregator.close()
    return [(a.rule, a.status) for a in out]


def test_shares_from_every_partition_give_what_one_engine_over_everyone_gives() -> None:
    assert _one_engine() == [("community_engagement_drop", "fired")]
    assert _spread_over(4) == _one_engine()


def test_shares_sent_twice_and_late_shares_change_nothing() -> None:
    aggregator = CommunityAggregator(RULES, sources=2)
    for day in range(5):
        period = (T0 + timedelta(days=day)).date().isoformat()
        for source in (0, 1):
            aggregator.share("day", period, "c1", source=source, values=[120.0, 2.0])
            aggregator.share("day", period, "c1", source=source, values=[120.0, 2.0])
    end = T0 + timedelta(days=6)
    aggregator.watermark(0, end, quiet=False)
    aggregator.watermark(1, end, quiet=False)
    assert aggregator.close() == []
    aggregator.share("day", T0.date().isoformat(), "c1", source=0, values=[0.0, 2.0])
    assert aggregator.late == 1 and aggregator.close() == []
    restored = CommunityAggregator.from_dict(RULES, 2, aggregator.to_dict())
    assert restored.to_dict() == aggregator.to_dict()


def test_a_quiet_source_stops_holding_periods_back() -> None:
    aggregator = CommunityAggregator(RULES, sources=2)
    aggregator.share("day", "2026-03-02", "c1", source=0, values=[100.0, 2.0])
    aggregator.watermark(0, T0 + timedelta(days=1), quiet=False)
    aggregator.watermark(1, None, quiet=False)  # present, no members scored yet
    aggregator.close()
    assert aggregator.horizon() is None
    aggregator.watermark(1, None, quiet=True)  # a partition with nobody in it
    assert aggregator.horizon() == T0 + timedelta(days=1)


def test_a_restored_source_moves_its_watermark_back_and_holds_its_periods() -> None:
    """A source restarted from its last checkpoint re-derives the shares it sent after
    it: the watermark it sent then is void, and the periods wait for the new shares."""
    aggregator = CommunityAggregator(RULES, sources=2)
    later = T0 + timedelta(days=3)
    aggregator.watermark(0, later, quiet=False)
    aggregator.watermark(1, later, quiet=False)
    assert aggregator.horizon() == later
    aggregator.watermark(1, T0, quiet=False)  # a late copy of an old one: ignored
    assert aggregator.horizon() == later
    aggregator.watermark(1, T0, quiet=False, restored=True)
    assert aggregator.horizon() == T0
    aggregator.forget_sources()  # restored on a new broker: every source says it again
    assert aggregator.horizon() is None
    aggregator.watermark(0, later, quiet=False, restored=True)
    assert aggregator.horizon() is None  # source 1 has not
