"""Online models: a prior, a champion and a challenger per target, learning from delayed labels.

Each target (``churn``, ``conversion``) has a :class:`ModelSlot`:

* the **prior** (:mod:`scoring.priors`) serves until the champion has learned
  ``min_labels_for_model`` labels, at least a tenth of them of each class;
  its version is ``<target>-prior``;
* the **champion**, ``StandardScaler | LogisticRegression`` (SGD, L2; the scaler is
  shared with the challenger), then serves
  as ``<target>-logreg-v1``; a linear model explains each score as
  ``weight * scaled value`` per feature (the ``top_drivers``);
* the **challenger**, the same pipeline with a faster learning rate, trains
  alongside on the same labels. ADWIN watches the champion's error stream
  (``|label - prediction|``, before learning); a drift is a change to a *higher* error.
  After a drift, for ``drift_patience_labels`` labels,
  the challenger is promoted when its recent log loss (exponentially forgotten,
  ``challenger_half_life_labels``) beats the champion's by ``promotion_margin``.
  The version then bumps (``-v2``...), the promoted model continues at the
  champion's steadier learning rate, and a fresh challenger starts.

Every label is first scored (delayed progressive validation of what was served,
:mod:`scoring.validation`; champion and challenger predict it before learning),
then learned. All of it pickles: :class:`ModelBank` is the engine's model part.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from river import drift, linear_model, optim, preprocessing

from scoring.config import ScoringConfig
from scoring.engagement import PopulationCalibrator
from scoring.features import FEATURE_NAMES, as_dict
from scoring.priors import LinearPrior, churn_prior, conversion_prior, sigmoid
from scoring.validation import ProgressiveValidation, log_loss_of

__all__ = ["Learner", "Served", "ModelSlot", "ModelBank", "CHURN", "CONVERSION", "CLIP"]

CHURN = "churn"
CONVERSION = "conversion"

# river's drift detectors are untyped; one typed alias keeps mypy strict elsewhere.
_ADWIN: Any = drift.ADWIN


#: Standardised values are clipped to +-CLIP: a rare feature's tiny early variance
#: must not turn one member's value into an extreme log-odds.
CLIP = 5.0

_Compiled = tuple[float, float, float, float]  # weight / std, mean, lowest, highest raw value


def clip_scaled(scaled: dict[str, float]) -> dict[str, float]:
    """Standardised features clipped to +-CLIP."""
    return {k: CLIP if v > CLIP else -CLIP if v < -CLIP else v for k, v in scaled.items()}


class Learner:
    """A logistic regression on standardised, clipped features, and its label counts.

    Champion and challenger share their slot's ``StandardScaler`` (feature
    statistics do not depend on the learner), so together they form two river
    pipelines ``StandardScaler | LogisticRegression`` that standardise once.
    Serving reads the parameters compiled per feature into ``(weight / std, mean,
    lowest, highest)`` -- the clipping bounds in raw units -- rebuilt after each
    learning step: the same arithmetic as the pipeline, several times faster, and
    it yields each feature's contribution to the log-odds on the way.
    """

    def __init__(self, scaler: Any, learning_rate: float, l2: float, seed: int) -> None:
        self.scaler = scaler
        self.regression = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate),
            l2=l2,
            intercept_lr=learning_rate,
            initializer=optim.initializers.Normal(mu=0.0, sigma=0.01, seed=seed),
        )
        self.labels = 0
        self.positives = 0
        self._compiled: dict[str, _Compiled] | None = None
        self._vectors: tuple[list[float], list[float], list[float], list[float]] | None = None
        self._intercept = 0.0

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_compiled"] = state["_vectors"] = None  # caches: checkpoints stay small
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _parameters(self) -> dict[str, _Compiled]:
        compiled = self._compiled
        if compiled is None:
            weights = self.regression._weights
            variances = self.scaler.vars
            compiled = {}
            for name, mean in self.scaler.means.items():
                variance = variances.get(name, 0.0)
                if variance > 0:
                    std = math.sqrt(variance)
                    slope = weights.get(name, 0.0) / std
                    compiled[name] = (slope, mean, mean - CLIP * std, mean + CLIP * std)
                else:
                    compiled[name] = (0.0, mean, -math.inf, math.inf)
            self._compiled = compiled
            self._intercept = float(self.regression.intercept)
        return compiled

    def _aligned(self) -> tuple[list[float], list[float], list[float], list[float]]:
        vectors = self._vectors
        if vectors is None:
            compiled = self._parameters()
            rows = [compiled.get(name, (0.0, 0.0, -math.inf, math.inf)) for name in FEATURE_NAMES]
            vectors = self._vectors = (
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            )
        return vectors

    def contributions_vector(self, vector: Sequence[float]) -> tuple[float, list[float]]:
        """Log-odds and per-feature contributions of a vector in FEATURE_NAMES order."""
        slopes, means, lows, highs = self._aligned()
        terms = [
            a * ((hi if v > hi else lo if v < lo else v) - m)
            for a, v, m, lo, hi in zip(slopes, vector, means, lows, highs, strict=False)
        ]
        return self._intercept + sum(terms), terms

    def explain(self, x: Mapping[str, float]) -> tuple[float, list[tuple[str, float]]]:
        """The probability and each feature's contribution to the log-odds."""
        compiled = self._parameters()
        contributions = []
        logit = self._intercept
        for name, value in x.items():
            row = compiled.get(name)
            if row is not None:
                a, m, lo, hi = row
                contribution = a * ((hi if value > hi else lo if value < lo else value) - m)
                logit += contribution
                contributions.append((name, contribution))
        return sigmoid(logit), contributions

    def predict(self, x: Mapping[str, float]) -> float:
        """Probability of the positive class."""
        return self.explain(x)[0]

    def set_learning_rate(self, learning_rate: float) -> None:
        """Change the SGD step of the weights and the intercept (keeping what was learned)."""
        self.regression.optimizer = optim.SGD(learning_rate)
        self.regression.intercept_lr = optim.schedulers.Constant(learning_rate)

    def learn_scaled(self, scaled: dict[str, float], y: int) -> None:
        """Learn one example already standardised (and clipped) by the slot."""
        self.regression.learn_one(scaled, bool(y))
        self._compiled = self._vectors = None
        self.labels += 1
        self.positives += y


@dataclass(frozen=True, slots=True)
class Served:
    """A served probability: its value, what produced it and, if asked, its drivers."""

    probability: float
    version: str
    is_model: bool
    drivers: list[tuple[str, float]]


def _top(contributions: list[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    ranked = heapq.nlargest(n, [(abs(value), name, value) for name, value in contributions])
    return [(name, round(value, 6)) for size, name, value in ranked if size > 0.0]


class ModelSlot:
    """Prior, champion and challenger of one target, with live quality and drift."""

    def __init__(self, name: str, prior: LinearPrior, config: ScoringConfig, seed: int) -> None:
        self.name = name
        self.prior = prior
        self.config = config
        self._seed = seed
        self._spawned = 0
        self.scaler: Any = preprocessing.StandardScaler()
        self.champion = Learner(self.scaler, config.learning_rate, config.l2, seed)
        self.challenger = self._new_challenger()
        self.generation = 0  # 0: the prior serves; n >= 1: logreg-vn
        self.validation = ProgressiveValidation(config.metrics_half_life_labels)
        self.detector: Any = _ADWIN(delta=config.drift_delta)
        self.champion_loss: float | None = None
        self.challenger_loss: float | None = None
        self.challenger_labels = 0
        self.patience = 0
        self.labels_seen = 0
        self.drift_unreported = False
        self.promoted_unreported = False
        self.drifts = 0
        self.promotions = 0

    def _new_challenger(self) -> Learner:
        self._spawned += 1
        return Learner(
            self.scaler,
            self.config.challenger_learning_rate,
            self.config.l2,
            self._seed + 7919 * self._spawned,
        )

    @property
    def version(self) -> str:
        """What serves now: ``<name>-prior`` or ``<name>-logreg-v<n>``."""
        return (
            f"{self.name}-prior"
            if self.generation == 0
            else f"{self.name}-logreg-v{self.generation}"
        )

    def _ready(self, learner: Learner) -> bool:
        need = self.config.min_labels_for_model
        negatives = learner.labels - learner.positives
        return learner.labels >= need and min(learner.positives, negatives) >= need / 10

    def serve(self, x: Mapping[str, float], explain: bool = False) -> Served:
        """The probability to publish for ``x`` (with top drivers when ``explain``)."""
        if self.generation == 0:
            p = self.prior.predict(x)
            drivers = _top(self.prior.contributions(x), self.config.top_drivers) if explain else []
            return Served(p, self.version, False, drivers)
        if not explain:
            return Served(self.champion.predict(x), self.version, True, [])
        p, contributions = self.champion.explain(x)
        return Served(p, self.version, True, _top(contributions, self.config.top_drivers))

    def serve_vector(self, vector: Sequence[float], explain: bool = False) -> Served:
        """:meth:`serve` for a vector in FEATURE_NAMES order (the engine's fast path)."""
        if self.generation == 0:
            return self.serve(as_dict(vector), explain)
        logit, terms = self.champion.contributions_vector(vector)
        if not explain:
            return Served(sigmoid(logit), self.version, True, [])
        n = self.config.top_drivers
        ranked = heapq.nlargest(n, zip(map(abs, terms), FEATURE_NAMES, terms, strict=False))
        drivers = [(name, round(value, 6)) for size, name, value in ranked if size > 0.0]
        return Served(sigmoid(logit), self.version, True, drivers)

    def learn(self, x: Mapping[str, float], y: int, served: float) -> tuple[bool, bool]:
        """Score a delayed label, then learn it. Returns (drift detected, promoted)."""
        self.labels_seen += 1
        self.validation.update(served, y)
        champion_p = self.champion.predict(x)
        challenger_p = self.challenger.predict(x)
        alpha = 1.0 - 2.0 ** (-1.0 / self.config.challenger_half_life_labels)
        loss_a, loss_b = log_loss_of(champion_p, y), log_loss_of(challenger_p, y)
        self.champion_loss = (
            loss_a
            if self.champion_loss is None
            else self.champion_loss + alpha * (loss_a - self.champion_loss)
        )
        self.challenger_loss = (
            loss_b
            if self.challenger_loss is None
            else self.challenger_loss + alpha * (loss_b - self.challenger_loss)
        )
        self.challenger_labels += 1

        drifted = promoted = False
        if self._ready(self.champion):
            before = float(self.detector.estimation)
            self.detector.update(abs(y - champion_p))
            # A drift is the error going up; ADWIN also flags a model that improves.
            if self.detector.drift_detected and float(self.detector.estimation) > before:
                drifted = True
                self.drifts += 1
                self.drift_unreported = True
                self.patience = self.config.drift_patience_labels
        if self.patience > 0:
            self.patience -= 1
            if self._challenger_wins():
                self._promote()
                promoted = True

        features = dict(x)
        self.scaler.learn_one(features)
        scaled = clip_scaled(self.scaler.transform_one(features))
        self.champion.learn_scaled(scaled, y)
        self.challenger.learn_scaled(scaled, y)
        if self.generation == 0 and self._ready(self.champion):
            self.generation = 1
        return drifted, promoted

    def _challenger_wins(self) -> bool:
        if self.champion_loss is None or self.challenger_loss is None:
            return False
        if self.challenger_labels < self.config.min_labels_for_model:
            return False
        if not self._ready(self.challenger):
            return False
        return self.challenger_loss < self.champion_loss * (1.0 - self.config.promotion_margin)

    def _promote(self) -> None:
        self.champion = self.challenger
        # fast to adapt as a challenger, steady as a champion
        self.champion.set_learning_rate(self.config.learning_rate)
        self.champion_loss = self.challenger_loss
        self.challenger = self._new_challenger()
        self.challenger_loss = None
        self.challenger_labels = 0
        self.generation = max(1, self.generation) + 1
        self.detector = _ADWIN(delta=self.config.drift_delta)
        self.patience = 0
        self.promotions += 1
        self.promoted_unreported = True


class ModelBank:
    """Everything learned across members: the two model slots and the engagement population."""

    def __init__(self, config: ScoringConfig) -> None:
        self.config = config
        self.churn = ModelSlot(CHURN, churn_prior(config.churn_window_days), config, config.seed)
        self.conversion = ModelSlot(CONVERSION, conversion_prior(), config, config.seed + 1)
        self.population = PopulationCalibrator(config)

    def slot(self, name: str) -> ModelSlot:
        """The slot of a target name."""
        return self.churn if name == CHURN else self.conversion

    @property
    def slots(self) -> tuple[ModelSlot, ModelSlot]:
        """Both slots, churn first."""
        return (self.churn, self.conversion)
