"""Engagement: raw weights, population percentiles, tiers, determinism."""

from __future__ import annotations

import pytest
from scoring_fixtures import MakeEvent, day

from scoring.config import ScoringConfig
from scoring.engagement import (
    KIND_WEIGHTS,
    PopulationCalibrator,
    bin_of,
    engagement_raw,
    tier_of,
)
from scoring.engine import ScoringEngine
from scoring.state import HALF_LIVES, KINDS, MemberState

pytestmark = pytest.mark.unit


def test_raw_engagement_is_the_documented_weighted_sum() -> None:
    state = MemberState("m", 0.0)
    for kind in ("content", "social", "referrals"):
        state.decayed[KINDS.index(kind) * HALF_LIVES + 1] = 2.0
    expected = 2.0 * (KIND_WEIGHTS["content"] + KIND_WEIGHTS["social"] + KIND_WEIGHTS["referrals"])
    assert engagement_raw(state, 0.0, 14 * 86_400.0) == pytest.approx(expected)
    assert engagement_raw(state, 14 * 86_400.0, 14 * 86_400.0) == pytest.approx(expected / 2)


def test_percentile_counts_each_member_once_when_rescored() -> None:
    config = ScoringConfig(min_population=2)
    population = PopulationCalibrator(config)
    bins = {name: -1 for name in "abcd"}
    for name, raw in zip("abcd", (1.0, 2.0, 4.0, 8.0), strict=True):
        population.move(bins[name], 0.0, bin_of(raw), 0.0)
        bins[name] = bin_of(raw)
    before = population.score(5.0, 0.0)
    # "d" is re-scored many times at the same level: the population does not change
    for _ in range(50):
        population.move(bins["d"], 0.0, bins["d"], 0.0)
    assert population.score(5.0, 0.0) == pytest.approx(before)
    assert population.population(0.0) == pytest.approx(4.0)


def test_scores_are_monotone_and_bounded() -> None:
    config = ScoringConfig(min_population=10)
    population = PopulationCalibrator(config)
    for i in range(200):
        population.move(-1, 0.0, bin_of(i * 0.5), 0.0)
    scores = [population.score(raw, 0.0) for raw in (0.0, 0.3, 1.0, 10.0, 50.0, 1e6)]
    assert scores == sorted(scores)
    assert scores[0] == 0.0 and scores[-1] == 100.0
    assert all(0.0 <= s <= 100.0 for s in scores)


def test_cold_start_uses_the_fixed_curve() -> None:
    config = ScoringConfig(min_population=100, engagement_scale=20.0)
    population = PopulationCalibrator(config)
    population.move(-1, 0.0, bin_of(3.0), 0.0)
    assert population.score(20.0, 0.0) == pytest.approx(100 * (1 - 2.718281828**-1), rel=1e-6)


def test_forgetting_lets_old_measurements_fade() -> None:
    config = ScoringConfig(min_population=1, population_half_life_days=10.0)
    population = PopulationCalibrator(config)
    population.move(-1, 0.0, bin_of(100.0), 0.0)  # a high value, long ago
    population.move(-1, 0.0, bin_of(1.0), 100 * 86_400.0)  # a low value, now
    # a value between them beats almost all the (recent) population
    assert population.score(10.0, 100 * 86_400.0) > 99.0


@pytest.mark.parametrize(
    ("score", "raw", "tier"),
    [
        (10.0, 5.0, "dormant"),
        (90.0, 0.1, "dormant"),
        (25.0, 5.0, "casual"),
        (59.9, 5.0, "casual"),
        (60.0, 5.0, "engaged"),
        (89.9, 5.0, "engaged"),
        (90.0, 5.0, "champion"),
    ],
)
def test_tier_boundaries(score: float, raw: float, tier: str) -> None:
    assert tier_of(score, raw, ScoringConfig()) == tier


def test_engine_engagement_is_deterministic_and_ranks_activity(make_event: MakeEvent) -> None:
    def run() -> dict[str, float]:
        engine = ScoringEngine(ScoringConfig(min_population=5))
        scores: dict[str, float] = {}
        for member in range(20):
            for k in range(member):
                event = make_event("post_created", f"m-{member}", k * 0.1)
                for record in engine.process(event):
                    if hasattr(record, "engagement_score"):
                        scores[f"m-{member}"] = record.engagement_score
        record = engine.score_member("m-19", day(2))
        scores["again"] = record.engagement_score
        return scores

    first, second = run(), run()
    assert first == second
    assert first["m-19"] > first["m-10"] > first["m-2"]
