"""Decay math: half-lives, order independence, the engine's decayed activity."""

from __future__ import annotations

import itertools
import math

import pytest
from scoring_fixtures import MakeEvent, day

from scoring.activity import apply_event
from scoring.clock import DAY
from scoring.config import ScoringConfig
from scoring.decay import add_decayed, decay_factor, value_at
from scoring.state import HALF_LIVES, KINDS, MemberState

pytestmark = pytest.mark.unit

H = 7 * DAY


def test_half_life_halves_and_two_half_lives_quarter() -> None:
    assert decay_factor(H, H) == pytest.approx(0.5)
    assert decay_factor(2 * H, H) == pytest.approx(0.25)
    assert decay_factor(0.0, H) == 1.0


def test_value_at_never_grows_forward_and_decays_exactly() -> None:
    assert value_at(8.0, 0.0, 3 * H, H) == pytest.approx(1.0)
    assert value_at(8.0, 10.0, 5.0, H) == 8.0


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_decayed_sum_does_not_depend_on_arrival_order(order: tuple[int, ...]) -> None:
    events = [(0.0, 1.0), (2 * DAY, 3.0), (9 * DAY, 0.5), (20 * DAY, 2.0)]
    half_lives = (H, 30 * DAY)
    sums, ref = [0.0, 0.0], 0.0
    for index in order:
        at, weight = events[index]
        ref = add_decayed(sums, 0, weight, ref, at, half_lives)
    end = 20 * DAY
    for j, half_life in enumerate(half_lives):
        expected = sum(w * math.exp(-math.log(2) * (end - t) / half_life) for t, w in events)
        assert value_at(sums[j], ref, end, half_life) == pytest.approx(expected, rel=1e-12)


def test_activity_feeds_its_kind_with_its_weight(make_event: MakeEvent) -> None:
    config = ScoringConfig()
    state = MemberState("m-1", day(0).timestamp())
    apply_event(state, make_event("post_created", at=0), config.half_lives_seconds)
    apply_event(state, make_event("reaction_added", at=7), config.half_lives_seconds)
    social = KINDS.index("social") * HALF_LIVES
    # short half-life 7 days: the post (3.0) halved, plus the reaction (0.5)
    assert state.decayed[social] == pytest.approx(3.0 * 0.5 + 0.5)
    assert state.decay_ref == day(7).timestamp()
    assert sum(state.decayed[KINDS.index("content") * HALF_LIVES :][:HALF_LIVES]) == 0.0


def test_non_activity_does_not_touch_decay_or_recency(make_event: MakeEvent) -> None:
    config = ScoringConfig()
    state = MemberState("m-1", day(0).timestamp())
    apply_event(state, make_event("content_viewed", at=0), config.half_lives_seconds)
    applied = apply_event(state, make_event("policy_lapsed", at=3), config.half_lives_seconds)
    assert not applied.is_activity
    assert state.last_activity_at == day(0).timestamp()
    assert state.decay_ref == day(0).timestamp()
