"""BG/NBD ("buy till you die", Fader, Hardie and Lee 2005): the classic baseline for churn.

Each customer buys at Poisson rate ``lambda ~ Gamma(r, alpha)`` while alive and, after
each purchase, drops out for good with probability ``p ~ Beta(a, b)``. A customer is
summarised by ``x`` (repeat purchases: active periods after the first), ``t_x`` (time
of the last purchase since the first) and ``T`` (time since the first purchase), in
any one time unit (weeks in the paper). The four parameters are fitted by maximum
likelihood with scipy over the distinct ``(x, t_x, T)`` rows.

Churn readings: ``1 - P(alive)`` and ``P(no purchase in the next t)``
(:func:`prob_no_purchase`). A maintained library was tried first: ``lifetimes``
(unmaintained since 2020) and ``btyd`` (only an alpha installs on Python 3.11 and it
fails to import) do not qualify, ``pymc-marketing`` only resolves to an old release
here, pulls in some fifty packages and fits MAP under priors rather than the
published maximum likelihood.

On the CDNOW sample (2,357 customers, 39 calibration weeks) the published estimates
are ``r=0.243, alpha=4.414, a=0.793, b=2.426`` with log-likelihood ``-9582.4``:

>>> params = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
>>> round(expected_purchases(params, 39.0, 2, 30.43, 38.86), 3)  # the paper's example
1.226
>>> round(prob_alive(params, 2, 30.43, 38.86), 3)
0.727
>>> prob_alive(params, 0, 0.0, 38.86)  # no repeat purchase: never seen to drop out
1.0
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from scoring.errors import ScoringError

__all__ = [
    "BgNbdParams",
    "BgNbdFitError",
    "CustomerSummary",
    "fit_bgnbd",
    "log_likelihood",
    "prob_alive",
    "expected_purchases",
    "prob_no_purchase",
]


class BgNbdFitError(ScoringError):
    """BG/NBD cannot be fitted on these customers (none, or no repeat purchase at all)."""


@dataclass(frozen=True, slots=True)
class BgNbdParams:
    """The four population parameters (``lambda ~ Gamma(r, alpha)``, ``p ~ Beta(a, b)``)."""

    r: float
    alpha: float
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    """One customer's ``(x, t_x, T)``: repeat purchases, last purchase and age, one unit."""

    x: int
    t_x: float
    T: float

    def __post_init__(self) -> None:
        if self.x < 0 or self.t_x < 0 or self.T < self.t_x or (self.x == 0 and self.t_x != 0):
            raise ValueError(f"inconsistent summary x={self.x} t_x={self.t_x} T={self.T}")


def _ll_terms(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-row log-likelihood (arrays of equal length), Fader et al. eq. 6 in logs."""
    base = special.betaln(a, b)
    head = special.gammaln(r + x) - special.gammaln(r) + r * math.log(alpha)
    alive = special.betaln(a, b + x) - base - (r + x) * np.log(alpha + T)
    repeat = x > 0
    safe_x = np.where(repeat, x, 1.0)  # x = 0 has no dropout term
    dropped = np.where(
        repeat,
        special.betaln(a + 1.0, b + safe_x - 1.0) - base - (r + safe_x) * np.log(alpha + t_x),
        -np.inf,
    )
    return np.asarray(head + np.logaddexp(alive, dropped))


def _arrays(
    customers: Iterable[CustomerSummary],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    counts = Counter((c.x, c.t_x, c.T) for c in customers)
    if not counts:
        raise BgNbdFitError("no customers to fit BG/NBD on")
    rows = np.array(list(counts.keys()), dtype=float)
    weights = np.array(list(counts.values()), dtype=float)
    return rows[:, 0], rows[:, 1], rows[:, 2], weights


def log_likelihood(params: BgNbdParams, customers: Iterable[CustomerSummary]) -> float:
    """Total log-likelihood of ``customers`` under ``params``.

    >>> ll = log_likelihood(BgNbdParams(0.243, 4.414, 0.793, 2.426),
    ...     [CustomerSummary(2, 30.43, 38.86), CustomerSummary(0, 0.0, 38.86)])
    >>> round(ll, 3)
    -10.013
    """
    x, t_x, T, w = _arrays(customers)
    terms = _ll_terms(params.r, params.alpha, params.a, params.b, x, t_x, T)
    return float(np.dot(w, terms))


def fit_bgnbd(customers: Sequence[CustomerSummary], penalizer: float = 0.0) -> BgNbdParams:
    """Maximum-likelihood parameters (optionally with an L2 penalty on them, as lifetimes).

    Optimises the log of the four parameters with L-BFGS-B from several starts and keeps
    the best; raises :class:`BgNbdFitError` without customers or without any repeat
    purchase (then ``p`` is not identified).
    """
    x, t_x, T, w = _arrays(customers)
    if not np.any(x > 0):
        raise BgNbdFitError("no customer made a repeat purchase: BG/NBD is not identified")
    total = float(w.sum())

    def objective(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(np.clip(log_params, -30.0, 30.0))
        value = float(np.dot(w, _ll_terms(r, alpha, a, b, x, t_x, T)))
        penalty = penalizer * float(np.sum(np.exp(log_params) ** 2))
        if not math.isfinite(value):
            return 1e300
        return -(value - penalty) / total

    best: optimize.OptimizeResult | None = None
    scale = max(1.0, float(np.average(T, weights=w)))
    for start in ((0.5, scale, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (0.2, 4.0 * scale, 0.5, 3.0)):
        result = optimize.minimize(objective, np.log(start), method="L-BFGS-B")
        if best is None or result.fun < best.fun:
            best = result
    assert best is not None
    r, alpha, a, b = (float(v) for v in np.exp(best.x))
    return BgNbdParams(r=r, alpha=alpha, a=a, b=b)


def prob_alive(params: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """P(still alive at ``T``) given ``(x, t_x, T)``; 1 without a repeat purchase."""
    if x == 0:
        return 1.0
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    log_ratio = math.log(a / (b + x - 1.0)) + (r + x) * math.log((alpha + T) / (alpha + t_x))
    return 1.0 / (1.0 + math.exp(min(700.0, log_ratio)))


def expected_purchases(params: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """Expected purchases in the next ``t`` given ``(x, t_x, T)`` (Fader et al. eq. 10)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if a <= 1.0:
        # the closed form divides by a - 1; a barely above 1 is numerically the same
        a = 1.0 + 1e-9 if abs(a - 1.0) < 1e-9 else a
    z = t / (alpha + T + t)
    hyp = float(special.hyp2f1(r + x, b + x, a + b + x - 1.0, z))
    head = (a + b + x - 1.0) / (a - 1.0)
    body = 1.0 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
    return float(head * body * prob_alive(params, x, t_x, T))


def prob_no_purchase(params: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """P(no purchase in the next ``t``): dead, or alive and the Poisson clock stays silent.

    Given alive, ``lambda`` is ``Gamma(r + x, alpha + T)``, so it stays silent for ``t``
    with probability ``((alpha + T) / (alpha + T + t)) ** (r + x)``. For a new customer
    (``T = 0``) this is the unconditional ``(alpha / (alpha + t)) ** r``:

    >>> p = BgNbdParams(0.243, 4.414, 0.793, 2.426)
    >>> prob_no_purchase(p, 10.0, 0, 0.0, 0.0) == (4.414 / 14.414) ** 0.243
    True
    """
    alive = prob_alive(params, x, t_x, T)
    silent = ((params.alpha + T) / (params.alpha + T + t)) ** (params.r + x)
    return float((1.0 - alive) + alive * silent)
