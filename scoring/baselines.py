"""Churn baselines from a purchase history: recency, frequency, RFM and BG/NBD.

Each baseline turns the purchases of each customer up to a cutoff into a churn score
(higher = more likely to buy nothing in the holdout), so that a model's served score
can be compared with them on the same customers and the same labels. Purchases are
counted per distinct day, as the BG/NBD literature does.

>>> days = {"a": [0, 10, 20], "b": [5], "c": [0, 1]}
>>> summaries = customer_summaries(days, last_day=27)
>>> summaries["a"], summaries["b"]
(CustomerSummary(x=2, t_x=20.0, T=27.0), CustomerSummary(x=0, t_x=0.0, T=22.0))
>>> recency_scores(days, 27)
{'a': 7.0, 'b': 22.0, 'c': 26.0}
>>> frequency_scores(days)
{'a': -3.0, 'b': -1.0, 'c': -2.0}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from scoring.bgnbd import (
    BgNbdParams,
    CustomerSummary,
    fit_bgnbd,
    prob_alive,
    prob_no_purchase,
)
from scoring.evaluation import rfm_baseline

__all__ = [
    "customer_summaries",
    "recency_scores",
    "frequency_scores",
    "rfm_scores",
    "BgNbdBaseline",
    "bgnbd_baseline",
]


def _distinct(days: Iterable[int]) -> list[int]:
    return sorted(set(days))


def customer_summaries(
    purchase_days: Mapping[str, Iterable[int]], last_day: int, unit_days: float = 1.0
) -> dict[str, CustomerSummary]:
    """BG/NBD's ``(x, t_x, T)`` per customer from purchase day numbers up to ``last_day``.

    ``x`` counts the distinct purchase days after the first, ``t_x`` and ``T`` are
    measured from the first purchase day to the last one and to ``last_day``, in units
    of ``unit_days`` (7 for the weeks of the literature). Customers without a purchase
    by ``last_day`` are left out.
    """
    out: dict[str, CustomerSummary] = {}
    for customer, days in purchase_days.items():
        kept = [d for d in _distinct(days) if d <= last_day]
        if not kept:
            continue
        first, last = kept[0], kept[-1]
        out[customer] = CustomerSummary(
            len(kept) - 1, (last - first) / unit_days, (last_day - first) / unit_days
        )
    return out


def recency_scores(purchase_days: Mapping[str, Iterable[int]], last_day: int) -> dict[str, float]:
    """Days from each customer's last purchase (up to ``last_day``) to ``last_day``."""
    out: dict[str, float] = {}
    for customer, days in purchase_days.items():
        kept = [d for d in days if d <= last_day]
        if kept:
            out[customer] = float(last_day - max(kept))
    return out


def frequency_scores(purchase_days: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """Minus the number of distinct purchase days (frequent buyers churn less)."""
    return {customer: -float(len(set(days))) for customer, days in purchase_days.items()}


def rfm_scores(
    purchase_days: Mapping[str, Iterable[int]], spend: Mapping[str, float], last_day: int
) -> dict[str, float]:
    """Minus the classic RFM score (recency, frequency and total spend quintiles, 3..15).

    >>> rfm_scores({"a": [9], "b": [1, 2, 3]}, {"a": 5.0, "b": 50.0}, 10)
    {'a': -8.0, 'b': -10.0}
    """
    recency = recency_scores(purchase_days, last_day)
    frequency = {c: float(len(set(d))) for c, d in purchase_days.items() if c in recency}
    value = rfm_baseline(recency, frequency, {c: spend.get(c, 0.0) for c in recency})
    return {c: -v for c, v in value.items()}


class BgNbdBaseline:
    """A fitted BG/NBD and its churn readings for a holdout of ``holdout_units``."""

    def __init__(
        self,
        params: BgNbdParams,
        summaries: Mapping[str, CustomerSummary],
        holdout_units: float,
    ) -> None:
        self.params = params
        self.summaries = summaries
        self.holdout_units = holdout_units

    def no_purchase(self) -> dict[str, float]:
        """P(no purchase in the holdout): the churn probability BG/NBD predicts."""
        p, t = self.params, self.holdout_units
        return {c: prob_no_purchase(p, t, s.x, s.t_x, s.T) for c, s in self.summaries.items()}

    def dead(self) -> dict[str, float]:
        """1 - P(alive) at the cutoff."""
        p = self.params
        return {c: 1.0 - prob_alive(p, s.x, s.t_x, s.T) for c, s in self.summaries.items()}


def bgnbd_baseline(
    purchase_days: Mapping[str, Sequence[int]],
    last_day: int,
    holdout_days: float,
    unit_days: float = 7.0,
) -> BgNbdBaseline:
    """Fit BG/NBD on the purchases up to ``last_day`` (in weeks by default)."""
    summaries = customer_summaries(purchase_days, last_day, unit_days)
    params = fit_bgnbd(list(summaries.values()))
    return BgNbdBaseline(params, summaries, holdout_days / unit_days)
