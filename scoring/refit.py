"""A logistic regression refitted to convergence on a forgetting reservoir of labels.

Online SGD on delayed labels tracks whatever settled last: labels settle in clusters
(a day's expired silences, a season's lapsed members), and on a real purchase log an
SGD model ended up predicting churn 0.99 for everyone, ranking worse than recency.
:class:`RefitLearner` keeps a bounded sample of the labelled examples it has seen --
a weighted reservoir (Efraimidis and Spirakis' A-Res) whose weights grow by ``2`` every
``half_life`` labels, so it represents recent labels more than old ones without being
swamped by the last cluster -- and every ``refit_every`` labels fits an L2-penalised
logistic regression on it with Newton's method (sooner while it has
learned little: after a quarter more labels), on features standardised over the
reservoir and clipped to ``+-CLIP``. The fit is the maximum-likelihood model of the
sample: calibrated on it, independent of the order labels came in, deterministic.

Serving reads the fitted parameters per feature as ``(weight / std, mean, lowest,
highest)``, so a score is one pass over the vector and explains itself as signed
contributions to the log-odds (the ``top_drivers``).

>>> import random
>>> rng = random.Random(3)
>>> learner = RefitLearner(["x", "noise"], capacity=500, half_life=1e9, l2=1.0,
...     refit_every=100, seed=1)
>>> for _ in range(1000):
...     x = rng.gauss(0.0, 1.0)
...     learner.learn([x, rng.gauss(0.0, 1.0)], int(rng.random() < 1 / (1 + 2.718 ** (-2 * x))))
>>> p = learner.predict({"x": 1.0, "noise": 0.0})  # the truth: 1 / (1 + e**-2) = 0.88
>>> learner.fitted, abs(p - 0.88) < 0.06, learner.labels, len(learner._heap)
(True, True, 1000, 500)
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scoring.priors import sigmoid

__all__ = ["RefitLearner", "CLIP"]

#: Standardised values are clipped to +-CLIP: a rare feature's tiny variance must not
#: turn one member's value into an extreme log-odds.
CLIP = 5.0
_STORE_LIMIT = 60_000.0  # float16 storage: larger magnitudes are clipped
_NEWTON_STEPS = 12


def _penalised_loss(design: np.ndarray, y: np.ndarray, w: np.ndarray, penalty: np.ndarray) -> float:
    """Negative log-likelihood of a logistic regression plus its L2 penalty."""
    logits = design @ w
    # log(1 + e^z) - y z, computed without overflow
    loss = np.logaddexp(0.0, logits) - y * logits
    return float(loss.sum() + 0.5 * np.sum(penalty * w * w))


class RefitLearner:
    """Logistic regression refitted on a forgetting reservoir; see the module docstring."""

    def __init__(
        self,
        names: Sequence[str],
        capacity: int,
        half_life: float,
        l2: float,
        refit_every: int,
        seed: int,
    ) -> None:
        if capacity < 2 or refit_every < 1 or half_life <= 0 or l2 < 0:
            raise ValueError("need capacity >= 2, refit_every >= 1, half_life > 0, l2 >= 0")
        self.names = tuple(names)
        self.capacity = capacity
        self.half_life = half_life
        self.l2 = l2
        self.refit_every = refit_every
        self._rng = random.Random(seed)  # noqa: S311 - sampling, not security
        d = len(self.names)
        # rows grow with the sample (doubling), so a young model checkpoints small
        self._x = np.zeros((min(capacity, 64), d), dtype=np.float16)
        self._y = np.zeros(min(capacity, 64), dtype=np.int8)
        self._heap: list[tuple[float, int]] = []  # (-key, row): the largest key on top
        self._seen = 0
        self._since_fit = 0
        self.labels = 0
        self.positives = 0
        self.fits = 0
        self._slopes: list[float] = [0.0] * d
        self._means: list[float] = [0.0] * d
        self._lows: list[float] = [-math.inf] * d
        self._highs: list[float] = [math.inf] * d
        self._intercept = 0.0
        self._index()

    # -- learning ---------------------------------------------------------------------

    def learn(self, vector: Sequence[float], y: int) -> None:
        """Add one labelled example (FEATURE order; shorter vectors are padded with 0)."""
        self.labels += 1
        self.positives += y
        self._seen += 1
        u = self._rng.random() or 1e-300
        key = math.log(-math.log(u)) - self._seen * math.log(2.0) / self.half_life
        if len(self._heap) < self.capacity:
            row = len(self._heap)
            heapq.heappush(self._heap, (-key, row))
        elif key < -self._heap[0][0]:
            row = heapq.heapreplace(self._heap, (-key, self._heap[0][1]))[1]
        else:
            row = -1
        if row >= 0:
            self._room(row + 1)
            values = np.zeros(len(self.names))
            n = min(len(vector), len(self.names))
            values[:n] = vector[:n]
            self._x[row] = np.clip(values, -_STORE_LIMIT, _STORE_LIMIT)
            self._y[row] = y
        self._since_fit += 1
        # early on, refit every quarter of what was learned (20 labels at least)
        if self._since_fit >= min(self.refit_every, max(20, self.labels // 4)):
            self.refit()

    def refit(self) -> None:
        """Fit the logistic regression on the reservoir now (no-op without both classes)."""
        self._since_fit = 0
        n = len(self._heap)
        y = self._y[:n].astype(float)
        positives = float(y.sum())
        if n < 2 or positives in (0.0, float(n)):
            return
        x = self._x[:n].astype(float)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        used = std > 1e-9
        z = np.clip((x[:, used] - mean[used]) / std[used], -CLIP, CLIP)
        design = np.asfortranarray(np.hstack([np.ones((n, 1)), z]))
        w = self._start(mean, std, used, math.log(positives / (n - positives)))
        penalty = np.full(design.shape[1], self.l2)
        penalty[0] = 0.0
        objective = _penalised_loss(design, y, w, penalty)
        for _ in range(_NEWTON_STEPS):
            p = 1.0 / (1.0 + np.exp(-np.clip(design @ w, -35.0, 35.0)))
            gradient = design.T @ (p - y) + penalty * w
            root = design * np.sqrt(p * (1.0 - p))[:, None]
            hessian = root.T @ root + np.diag(penalty + 1e-9)
            step = np.linalg.solve(hessian, gradient)
            size = 1.0
            while True:  # damped Newton: never accept a step that makes the fit worse
                candidate = w - size * step
                value = _penalised_loss(design, y, candidate, penalty)
                if value <= objective or size < 1e-4:
                    break
                size /= 2.0
            if value > objective:
                break
            w, objective = candidate, value
            if float(np.max(np.abs(size * step))) < 1e-6:
                break
        self.fits += 1
        self._compile(w, mean, std, used)

    def _room(self, rows: int) -> None:
        """Grow the sample's arrays (doubling, up to the capacity) to hold ``rows``."""
        have = len(self._y)
        if rows <= have:
            return
        size = min(self.capacity, max(rows, 2 * have))
        x = np.zeros((size, len(self.names)), dtype=np.float16)
        y = np.zeros(size, dtype=np.int8)
        x[:have], y[:have] = self._x, self._y
        self._x, self._y = x, y

    def _start(
        self, mean: np.ndarray, std: np.ndarray, used: np.ndarray, base: float
    ) -> np.ndarray:
        """The previous fit in this fit's standardised basis (a warm start), else the base
        rate; Newton then needs two or three steps instead of six or more."""
        w = np.zeros(int(used.sum()) + 1)
        if not self.fitted:
            w[0] = base
            return w
        slopes = np.asarray(self._slopes)
        shift = float(np.dot(slopes, mean - np.asarray(self._means)))
        w[0] = self._intercept + shift
        w[1:] = (slopes * std)[used]
        return w

    def _compile(self, w: np.ndarray, mean: np.ndarray, std: np.ndarray, used: np.ndarray) -> None:
        d = len(self.names)
        slopes, lows, highs = [0.0] * d, [-math.inf] * d, [math.inf] * d
        j = 1
        for i in range(d):
            if used[i]:
                s = float(std[i])
                slopes[i] = float(w[j]) / s
                lows[i] = float(mean[i]) - CLIP * s
                highs[i] = float(mean[i]) + CLIP * s
                j += 1
        self._slopes, self._lows, self._highs = slopes, lows, highs
        self._means = [float(v) for v in mean]
        self._intercept = float(w[0])
        self._index()

    def _index(self) -> None:
        """The features with a slope, what serving reads: a feature without one (no
        variance in the sample, e.g. interactions in a purchases-only community) adds an
        exact zero to every logit and is never a driver."""
        self._active = [
            (i, a, m, lo, hi)
            for i, (a, m, lo, hi) in enumerate(
                zip(self._slopes, self._means, self._lows, self._highs, strict=True)
            )
            if a != 0.0
        ]
        self._active_names = tuple(self.names[i] for i, *_ in self._active)

    def adopt(self, other: RefitLearner) -> None:
        """Take over another learner's sample and refit at once (a promotion)."""
        n = min(len(other._heap), self.capacity)
        rows = [row for _, row in heapq.nsmallest(n, other._heap)]
        self._room(n)
        self._x[:n] = other._x[rows]
        self._y[:n] = other._y[rows]
        # the adopted sample counts as drawn now, on this learner's clock
        now = self._seen * math.log(2.0) / self.half_life
        self._heap = [
            (-(math.log(-math.log(self._rng.random() or 1e-300)) - now), i) for i in range(n)
        ]
        heapq.heapify(self._heap)
        self.refit()

    # -- serving ----------------------------------------------------------------------

    @property
    def fitted(self) -> bool:
        """Whether a fit has happened (before it, every prediction is 0.5)."""
        return self.fits > 0

    def active_terms(self, vector: Sequence[float]) -> tuple[float, Sequence[str], list[float]]:
        """Log-odds of a vector in the names' order, and the names and contributions of
        the features with a slope: :meth:`contributions_vector` without its zeros (adding
        a zero changes no sum, and a zero is never a driver). A shorter vector (an older
        snapshot) gets every feature it has."""
        if len(vector) < len(self.names):
            logit, terms = self.contributions_vector(vector)
            return logit, self.names, terms
        terms = [
            a * ((hi if (v := vector[i]) > hi else lo if v < lo else v) - m)
            for i, a, m, lo, hi in self._active
        ]
        return self._intercept + sum(terms), self._active_names, terms

    def contributions_vector(self, vector: Sequence[float]) -> tuple[float, list[float]]:
        """Log-odds and per-feature contributions of a vector in the names' order."""
        terms = [
            a * ((hi if v > hi else lo if v < lo else v) - m)
            for a, v, m, lo, hi in zip(
                self._slopes, vector, self._means, self._lows, self._highs, strict=False
            )
        ]
        return self._intercept + sum(terms), terms

    def explain(self, x: Mapping[str, float]) -> tuple[float, list[tuple[str, float]]]:
        """The probability of ``x`` (missing features at their mean) and contributions."""
        vector = [x.get(name, mean) for name, mean in zip(self.names, self._means, strict=True)]
        logit, terms = self.contributions_vector(vector)
        return sigmoid(logit), [
            (name, t) for name, t in zip(self.names, terms, strict=True) if name in x
        ]

    def predict(self, x: Mapping[str, float]) -> float:
        """Probability of the positive class."""
        return self.explain(x)[0]

    def predict_vector(self, vector: Sequence[float]) -> float:
        """Probability of the positive class for a vector in the names' order."""
        return sigmoid(self.active_terms(vector)[0])

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_active"], state["_active_names"]  # derived: rebuilt when unpickled
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._index()
