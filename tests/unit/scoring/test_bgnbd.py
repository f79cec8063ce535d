"""BG/NBD against the published CDNOW estimates, and its churn readings against simulation."""

from __future__ import annotations

import csv
import math
import random
from datetime import date
from pathlib import Path

import pytest

from scoring.baselines import customer_summaries
from scoring.bgnbd import (
    BgNbdFitError,
    BgNbdParams,
    CustomerSummary,
    expected_purchases,
    fit_bgnbd,
    log_likelihood,
    prob_alive,
    prob_no_purchase,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
PUBLISHED = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)


def _cdnow_sample_summaries() -> dict[str, CustomerSummary]:
    """The paper's calibration data: 39 weeks from 1997-01-01, in weeks, per distinct day."""
    days: dict[str, list[int]] = {}
    with (ROOT / "data" / "cdnow" / "CDNOW_sample.csv").open() as f:
        for row in csv.DictReader(f):
            d = row["date"]
            days.setdefault(row["customer_id"], []).append(
                date(int(d[:4]), int(d[4:6]), int(d[6:])).toordinal()
            )
    return customer_summaries(days, date(1997, 9, 30).toordinal(), unit_days=7.0)


def test_the_cdnow_sample_summarises_as_in_the_paper() -> None:
    summaries = _cdnow_sample_summaries()
    assert len(summaries) == 2357
    assert sum(s.x for s in summaries.values()) == 2457  # repeat purchases in 39 weeks
    assert summaries["0001"] == CustomerSummary(2, 213 / 7, 272 / 7)  # 30.43, 38.86 weeks


def test_fit_reproduces_the_published_cdnow_estimates() -> None:
    summaries = list(_cdnow_sample_summaries().values())
    fitted = fit_bgnbd(summaries)
    assert fitted.r == pytest.approx(PUBLISHED.r, abs=0.001)
    assert fitted.alpha == pytest.approx(PUBLISHED.alpha, abs=0.005)
    assert fitted.a == pytest.approx(PUBLISHED.a, abs=0.001)
    assert fitted.b == pytest.approx(PUBLISHED.b, abs=0.005)
    # the paper's log-likelihood, and the fit is the maximum
    assert log_likelihood(PUBLISHED, summaries) == pytest.approx(-9582.4, abs=0.1)
    assert log_likelihood(fitted, summaries) >= log_likelihood(PUBLISHED, summaries)
    worse = BgNbdParams(0.3, 4.0, 0.8, 2.4)
    assert log_likelihood(worse, summaries) < log_likelihood(fitted, summaries) - 1.0


def test_conditional_expectations_match_the_paper() -> None:
    # Fader, Hardie and Lee (2005): a customer with x=2, t_x=30.43, T=38.86 weeks is
    # expected to make 1.226 purchases in the next 39 weeks
    assert expected_purchases(PUBLISHED, 39.0, 2, 30.43, 38.86) == pytest.approx(1.226, abs=5e-4)
    assert prob_alive(PUBLISHED, 2, 30.43, 38.86) == pytest.approx(0.7266, abs=5e-4)
    assert prob_alive(PUBLISHED, 0, 0.0, 38.86) == 1.0
    # the longer a frequent buyer is silent, the likelier dead
    assert prob_alive(PUBLISHED, 5, 10.0, 38.0) < prob_alive(PUBLISHED, 5, 30.0, 38.0)


def _simulate(params: BgNbdParams, n: int, calibration: float, holdout: float, seed: int):
    """BG/NBD customers: (summary at the end of calibration, bought in the holdout)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        rate = rng.gammavariate(params.r, 1.0 / params.alpha)
        dropout = rng.betavariate(params.a, params.b)
        t, times, alive = 0.0, [], True
        while alive:
            t += rng.expovariate(rate) if rate > 0 else math.inf
            if t > calibration + holdout:
                break
            times.append(t)
            alive = rng.random() >= dropout
        before = [s for s in times if s <= calibration]
        summary = CustomerSummary(len(before), before[-1] if before else 0.0, calibration)
        out.append((summary, any(s > calibration for s in times)))
    return out


def test_prob_no_purchase_is_calibrated_on_simulated_customers() -> None:
    """P(no purchase in the holdout) against BG/NBD customers simulated with known parameters."""
    customers = _simulate(PUBLISHED, 20_000, 39.0, 39.0, seed=4)
    predicted = [prob_no_purchase(PUBLISHED, 39.0, s.x, s.t_x, s.T) for s, _ in customers]
    observed = [0 if bought else 1 for _, bought in customers]
    assert sum(predicted) / len(predicted) == pytest.approx(sum(observed) / len(observed), abs=0.01)
    # calibrated within groups too: customers ranked by the prediction, in four quarters
    order = sorted(range(len(customers)), key=predicted.__getitem__)
    for q in range(4):
        part = order[q * 5000 : (q + 1) * 5000]
        mean_p = sum(predicted[i] for i in part) / len(part)
        mean_y = sum(observed[i] for i in part) / len(part)
        assert mean_p == pytest.approx(mean_y, abs=0.025)
    # the new customer's reading is the unconditional one
    assert prob_no_purchase(PUBLISHED, 10.0, 0, 0.0, 0.0) == pytest.approx(
        (PUBLISHED.alpha / (PUBLISHED.alpha + 10.0)) ** PUBLISHED.r
    )


def test_fit_errors_are_typed() -> None:
    with pytest.raises(BgNbdFitError):
        fit_bgnbd([])
    with pytest.raises(BgNbdFitError, match="repeat"):
        fit_bgnbd([CustomerSummary(0, 0.0, 10.0)] * 5)
    with pytest.raises(ValueError):
        CustomerSummary(1, 12.0, 10.0)  # last purchase after the end
    with pytest.raises(ValueError):
        CustomerSummary(0, 3.0, 10.0)  # no repeat purchase but a recency
