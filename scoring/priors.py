"""Fixed priors that serve until a model has learned from enough delayed labels.

A prior is a hand-set logistic model over a few features, so it explains
itself the same way the learned model does (``weight * value`` per feature).

* **Churn** (recency-based): ``logit = -2 + 4 * min(recency / churn_window, 2)``.
  A member active today reads 0.12, silent for half the window 0.50, for the
  whole window 0.88.
* **Conversion** (intent-based): a low base rate raised by a recent quote or
  application and product content, lowered by time since the last activity.

>>> prior = churn_prior(30.0)
>>> round(prior.predict({"recency_days": 15.0}), 2), round(prior.predict({}), 2)
(0.5, 0.12)
>>> prior.contributions({"recency_days": 30.0})
[('recency_days', 4.0)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["LinearPrior", "churn_prior", "conversion_prior", "sigmoid"]


def sigmoid(z: float) -> float:
    """The logistic function, overflow-safe."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True)
class LinearPrior:
    """``sigmoid(intercept + sum(weight * transform(x[name])))`` over a few features."""

    intercept: float
    weights: tuple[tuple[str, float, float], ...]
    """(feature, weight, cap): the feature's value is capped at ``cap`` before weighting."""

    def contributions(self, x: Mapping[str, float]) -> list[tuple[str, float]]:
        """Signed contribution of each feature to the log-odds (missing features: 0)."""
        return [(name, w * min(x.get(name, 0.0), cap)) for name, w, cap in self.weights]

    def predict(self, x: Mapping[str, float]) -> float:
        """Probability of the positive class."""
        return sigmoid(self.intercept + sum(c for _, c in self.contributions(x)))


def churn_prior(churn_window_days: float) -> LinearPrior:
    """The recency prior of churn for a churn window in days."""
    scale = 4.0 / churn_window_days
    return LinearPrior(-2.0, (("recency_days", scale, 2.0 * churn_window_days),))


def conversion_prior() -> LinearPrior:
    """The intent prior of conversion within the conversion window."""
    return LinearPrior(
        -2.5,
        (
            ("quote_recent", 1.5, 1.0),
            ("application_recent", 2.0, 1.0),
            ("lvl_intent", 0.8, 3.0),
            ("lvl_product", 0.3, 3.0),
            ("log_recency", -0.6, 5.0),
            ("silent_14", -1.0, 1.0),
        ),
    )
