"""Exponential time decay on event time.

A decayed sum holds ``sum(w_i * 2 ** (-(T - t_i) / half_life))`` for the events
``(t_i, w_i)`` seen so far, evaluated at a reference time ``T``. Adding an event
older than ``T`` multiplies its weight by the decay it has already undergone,
so the sum does not depend on the order in which events arrive: late events
and replays in any order give the same value.

>>> half_life = 7 * 86_400.0
>>> round(decay_factor(7 * 86_400.0, half_life), 6)
0.5
>>> sums, ref = [0.0], 0.0
>>> ref = add_decayed(sums, 0, 1.0, ref, 14 * 86_400.0, (half_life,))
>>> ref = add_decayed(sums, 0, 1.0, ref, 0.0, (half_life,))  # an old event, late
>>> ref, round(sums[0], 6)
(1209600.0, 1.25)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["decay_factor", "decay_factors", "add_decayed", "value_at"]

_LN2 = math.log(2.0)


def decay_factor(elapsed: float, half_life: float) -> float:
    """``2 ** (-elapsed / half_life)``; time running backwards grows the value."""
    return math.exp(-_LN2 * elapsed / half_life)


def decay_factors(elapsed: float, half_lives: Sequence[float]) -> list[float]:
    """One decay factor per half-life."""
    return [math.exp(-_LN2 * elapsed / h) for h in half_lives]


def add_decayed(
    sums: list[float],
    offset: int,
    weight: float,
    ref: float,
    at: float,
    half_lives: Sequence[float],
) -> float:
    """Add ``weight`` at time ``at`` to ``sums`` and return the new reference time.

    ``sums`` is a flat list laid out as ``[series0_h0, series0_h1, ...,
    series1_h0, ...]``; ``offset`` is the index of the series' first half-life.
    When ``at`` is later than ``ref`` every series in ``sums`` is first decayed
    to ``at`` (the list shares one reference time); otherwise the weight itself
    is decayed back to ``ref``.
    """
    n = len(half_lives)
    if at > ref:
        factors = decay_factors(at - ref, half_lives)
        for i in range(len(sums)):
            sums[i] *= factors[i % n]
        ref = at
        for j in range(n):
            sums[offset + j] += weight
    else:
        factors = decay_factors(ref - at, half_lives)
        for j in range(n):
            sums[offset + j] += weight * factors[j]
    return ref


def value_at(value: float, ref: float, at: float, half_life: float) -> float:
    """A decayed value held at ``ref``, read at ``at`` (never grows forward in time)."""
    if at <= ref:
        return value
    return value * decay_factor(at - ref, half_life)
