"""Delayed progressive validation: score each served prediction when its label arrives.

The engine records the probability it served at snapshot time; when the
snapshot's delayed label arrives, *before* the model learns from it, the pair
goes into a :class:`ProgressiveValidation`. Its figures cover recent labels:
each label weighs ``2 ** (1 / half_life)`` times the previous one (exponential
forgetting, O(1) per label), so a model that degrades shows it.

* ROC AUC from two histograms of predictions (positives and negatives) binned on
  the log-odds scale (320 bins of 0.1 between -16 and 16, so a model whose
  probabilities are all small is still resolved), ties within a bin counting one half;
* log loss (predictions clipped to [1e-7, 1 - 1e-7]);
* expected calibration error over 10 equal-width bins: the weighted mean of
  ``|mean prediction - observed rate|`` per bin;
* positive rate.

>>> v = ProgressiveValidation(half_life=1e9)
>>> for p, y in [(0.9, 1), (0.8, 1), (0.3, 0), (0.2, 0), (0.6, 0), (0.4, 1)]:
...     v.update(p, y)
>>> round(v.roc_auc(), 3), round(v.log_loss(), 3), v.labels
(0.889, 0.457, 6)
"""

from __future__ import annotations

import math

__all__ = ["ProgressiveValidation", "log_loss_of"]

_AUC_BINS = 320
_LOGIT_MIN = -16.0
_LOGIT_BIN = 0.1
_CAL_BINS = 10
_EPS = 1e-7
_RESCALE_AT = 1e100


def log_loss_of(p: float, y: int) -> float:
    """Log loss of one prediction."""
    p = min(1.0 - _EPS, max(_EPS, p))
    return -math.log(p) if y else -math.log(1.0 - p)


class ProgressiveValidation:
    """Forgetting metrics of a stream of (prediction, label) pairs."""

    def __init__(self, half_life: float) -> None:
        self.growth = 2.0 ** (1.0 / half_life)
        self.weight = 1.0
        self.labels = 0
        self.positives = 0
        self.pos_hist = [0.0] * _AUC_BINS
        self.neg_hist = [0.0] * _AUC_BINS
        self.cal_pred = [0.0] * _CAL_BINS
        self.cal_true = [0.0] * _CAL_BINS
        self.cal_weight = [0.0] * _CAL_BINS
        self.loss_sum = 0.0
        self.total = 0.0
        self.pos_sum = 0.0

    def _rescale(self) -> None:
        factor = 1.0 / self.weight
        for values in (self.pos_hist, self.neg_hist, self.cal_pred, self.cal_true, self.cal_weight):
            for i in range(len(values)):
                values[i] *= factor
        self.loss_sum *= factor
        self.total *= factor
        self.pos_sum *= factor
        self.weight = 1.0

    def update(self, p: float, y: int) -> None:
        """Account for one prediction ``p`` whose label turned out to be ``y`` (0 or 1)."""
        self.weight *= self.growth
        if self.weight > _RESCALE_AT:
            self._rescale()
        w = self.weight
        self.labels += 1
        self.positives += y
        clipped = min(1.0 - _EPS, max(_EPS, p))
        logit = math.log(clipped / (1.0 - clipped))
        index = min(_AUC_BINS - 1, max(0, int((logit - _LOGIT_MIN) / _LOGIT_BIN)))
        (self.pos_hist if y else self.neg_hist)[index] += w
        cal = min(_CAL_BINS - 1, max(0, int(p * _CAL_BINS)))
        self.cal_pred[cal] += w * p
        self.cal_true[cal] += w * y
        self.cal_weight[cal] += w
        self.loss_sum += w * log_loss_of(p, y)
        self.total += w
        self.pos_sum += w * y

    def roc_auc(self) -> float | None:
        """ROC AUC, or None before both classes were seen."""
        pos_total, neg_total = sum(self.pos_hist), sum(self.neg_hist)
        if pos_total <= 0.0 or neg_total <= 0.0:
            return None
        below = 0.0
        area = 0.0
        for pos, neg in zip(self.pos_hist, self.neg_hist, strict=True):
            area += pos * (below + 0.5 * neg)
            below += neg
        return area / (pos_total * neg_total)

    def log_loss(self) -> float | None:
        """Mean log loss, or None before any label."""
        return self.loss_sum / self.total if self.total > 0.0 else None

    def calibration_error(self) -> float | None:
        """Expected calibration error over 10 bins, or None before any label."""
        if self.total <= 0.0:
            return None
        gap = sum(abs(pred - true) for pred, true in zip(self.cal_pred, self.cal_true, strict=True))
        return gap / self.total

    def positive_rate(self) -> float | None:
        """Share of positive labels, or None before any label."""
        return self.pos_sum / self.total if self.total > 0.0 else None
