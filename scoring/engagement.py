"""Engagement: transparent weights on decayed activity, calibrated against the population.

**Raw engagement** is a weighted sum of the member's decayed activity per kind
(half-life ``engagement_half_life_days``, 14 days by default). Within a kind,
events already carry an effort weight (a post counts 3, a reaction 0.5: see
:mod:`scoring.activity`); across kinds, :data:`KIND_WEIGHTS` says how much each
kind of engagement matters to a community:

==========  ======  ======================================================
kind        weight  why
==========  ======  ======================================================
content     1.0     reading is the base of community marketing
social      1.5     posting and commenting build the community
quiz_live   1.5     quizzes and live sessions are the interactive core
points      0.5     incentives show interest but can be farmed
referrals   2.0     word of mouth is the strongest engagement signal
reviews     1.5     reviews and survey answers are voice of the customer
intent      1.0     quotes and applications: engagement with the products
==========  ======  ======================================================

**The score** (0-100) is the member's percentile among the population: the
share of members whose latest raw engagement is lower (mid-rank within a bin).
The population is a log-binned histogram (8 bins per doubling) holding each
member's latest value, weighted by how recently it was measured (exponential
forgetting, half-life ``population_half_life_days``): a member's re-score
moves their weight from the old bin to the new one, so every member counts
once and members who left fade out. The histogram depends only on the event
sequence: the same events give the same scores. Until ``min_population``
members are in it, a fixed saturating curve ``100 * (1 - exp(-raw / scale))``
serves instead.

**Tiers**: ``dormant`` below ``tier_casual_min`` (25) or when raw engagement is
below ``dormant_activity_floor`` whatever the population; ``casual`` below
``tier_engaged_min`` (60); ``engaged`` below ``tier_champion_min`` (90);
``champion`` above.

>>> from scoring.config import ScoringConfig
>>> config = ScoringConfig(min_population=3)
>>> population = PopulationCalibrator(config)
>>> for member, raw in enumerate([0.0, 1.0, 2.0, 4.0, 8.0, 16.0]):
...     _ = population.move(-1, 0.0, bin_of(raw), 0.0)
>>> population.score(0.0, 0.0), round(population.score(4.0, 0.0), 1), population.score(100.0, 0.0)
(0.0, 59.6, 100.0)
>>> tier_of(59.6, 4.0, config), tier_of(95.0, 30.0, config), tier_of(40.0, 0.1, config)
('casual', 'champion', 'dormant')
"""

from __future__ import annotations

import math
from enum import StrEnum

from scoring.clock import DAY
from scoring.config import ScoringConfig
from scoring.decay import decay_factor
from scoring.state import HALF_LIVES, KINDS, MemberState

__all__ = [
    "EngagementTier",
    "KIND_WEIGHTS",
    "BINS",
    "BINS_PER_DOUBLING",
    "engagement_raw",
    "bin_of",
    "tier_of",
    "PopulationCalibrator",
]


class EngagementTier(StrEnum):
    """Engagement tiers, lowest first."""

    DORMANT = "dormant"
    CASUAL = "casual"
    ENGAGED = "engaged"
    CHAMPION = "champion"


KIND_WEIGHTS: dict[str, float] = {
    "content": 1.0,
    "social": 1.5,
    "quiz_live": 1.5,
    "points": 0.5,
    "referrals": 2.0,
    "reviews": 1.5,
    "intent": 1.0,
}
_WEIGHT_AT = tuple(
    (KINDS.index(kind) * HALF_LIVES + 1, weight) for kind, weight in KIND_WEIGHTS.items()
)

BINS_PER_DOUBLING = 8
BINS = 14 * BINS_PER_DOUBLING
_RESCALE_AFTER = 40.0  # half-lives between rescalings of the histogram's reference time


def engagement_raw(state: MemberState, at: float, half_life: float) -> float:
    """Weighted decayed activity of ``state`` at ``at`` (engagement half-life, in seconds)."""
    decayed = state.decayed
    total = 0.0
    for index, weight in _WEIGHT_AT:
        total += weight * decayed[index]
    if at > state.decay_ref:
        total *= decay_factor(at - state.decay_ref, half_life)
    return total


def _position(raw: float) -> float:
    return math.log2(1.0 + max(0.0, raw)) * BINS_PER_DOUBLING


def bin_of(raw: float) -> int:
    """The histogram bin of a raw engagement value."""
    return min(BINS - 1, int(_position(raw)))


def tier_of(score: float, raw: float, config: ScoringConfig) -> str:
    """The tier of a score (0-100) and raw engagement."""
    if raw < config.dormant_activity_floor or score < config.tier_casual_min:
        return EngagementTier.DORMANT.value
    if score < config.tier_engaged_min:
        return EngagementTier.CASUAL.value
    if score < config.tier_champion_min:
        return EngagementTier.ENGAGED.value
    return EngagementTier.CHAMPION.value


class PopulationCalibrator:
    """Log-binned histogram of members' latest raw engagement, with exponential forgetting.

    A measurement at time ``t`` weighs ``2 ** ((t - ref) / half_life)``; growing weights
    instead of shrinking old ones keeps an update O(1). ``ref`` moves forward (and the
    weights are rescaled) before they grow large.
    """

    def __init__(self, config: ScoringConfig) -> None:
        self.half_life = config.population_half_life_days * DAY
        self.min_population = config.min_population
        self.scale = config.engagement_scale
        self.weights = [0.0] * BINS
        self.ref: float | None = None

    def _weight(self, at: float) -> float:
        assert self.ref is not None
        return math.pow(2.0, (at - self.ref) / self.half_life)

    def _rebase(self, at: float) -> None:
        if self.ref is None:
            self.ref = at
        elif at - self.ref > _RESCALE_AFTER * self.half_life:
            factor = decay_factor(at - self.ref, self.half_life)
            self.weights = [w * factor for w in self.weights]
            self.ref = at

    def move(self, old_bin: int, old_at: float, new_bin: int, at: float) -> float:
        """Replace a member's measurement (``old_bin`` -1: none) by one in ``new_bin`` at ``at``.

        Returns the weight added.
        """
        self._rebase(at)
        if old_bin >= 0:
            self.weights[old_bin] = max(0.0, self.weights[old_bin] - self._weight(old_at))
        added = self._weight(at)
        self.weights[new_bin] += added
        return added

    def remove(self, old_bin: int, old_at: float) -> None:
        """Forget a member's measurement (erasure)."""
        if old_bin >= 0 and self.ref is not None:
            self.weights[old_bin] = max(0.0, self.weights[old_bin] - self._weight(old_at))

    def population(self, at: float) -> float:
        """Effective number of members at ``at`` (forgotten ones count less)."""
        if self.ref is None:
            return 0.0
        return sum(self.weights) / self._weight(at)

    def score(self, raw: float, at: float) -> float:
        """The engagement score (0-100) of a raw value against the population at ``at``."""
        if raw <= 0.0:
            return 0.0
        total = sum(self.weights)
        if self.ref is None or total / self._weight(at) < self.min_population:
            return 100.0 * (1.0 - math.exp(-raw / self.scale))
        position = _position(raw)
        index = min(BINS - 1, int(position))
        fraction = min(1.0, position - index)
        below = sum(self.weights[:index]) + fraction * self.weights[index]
        return min(100.0, max(0.0, 100.0 * below / total))
