"""Online models: a prior, a champion and a challenger per target, learning from delayed labels.

Each target (``churn``, ``conversion``) has a :class:`ModelSlot`:

* the **prior** (:mod:`scoring.priors`; recency for churn) serves until the champion
  has learned ``min_labels_for_model`` labels, at least a tenth of them of each class,
  **and** ranks the labels both were validated on at least as well as the prior (ROC
  AUC): a model never replaces recency before it beats it. If the champion later
  falls ``fallback_auc_margin`` below the prior on recent labels, the prior serves
  again until the champion catches up. Its version is ``<target>-prior``;
* the **champion**, a logistic regression refitted to convergence on a forgetting
  reservoir of labelled examples (:class:`~scoring.refit.RefitLearner`: long
  half-life, ``reservoir_labels`` examples), then serves as ``<target>-logreg-v1``; a
  linear model explains each score as ``weight * scaled value`` per feature (the
  ``top_drivers``), and a maximum-likelihood fit is calibrated on its sample;
* **drift**: ADWIN (river) watches the champion's error stream (``|label -
  prediction|``, before learning); a drift is a change to a *higher* error. It is
  counted and reported (``drift_detected`` in ``model_metrics``);
* the **challenger** (only with ``promote_challenger``; off by default), the same
  learner on a smaller reservoir with a short half-life, trains alongside on the
  same labels. After a drift, for ``drift_patience_labels`` labels, it is promoted
  when its recent log loss on the same labels (exponentially forgotten,
  ``challenger_half_life_labels``) beats the champion's by ``promotion_margin``. The
  version then bumps (``-v2``...) and the champion is **recalibrated** at once: it
  adopts the challenger's recent sample, refits on it, and keeps learning at its
  long half-life; a fresh challenger starts. Off, because the drifts measured on a
  real purchase log were shifts of the label mix, which the champion's own refits
  follow, and a challenger fitted to the recent mix ranked the whole base worse.

Every label is first scored (delayed progressive validation of what was served,
:mod:`scoring.validation`; prior, champion and any challenger predict it before
learning), then learned. All of it pickles: :class:`ModelBank` is the engine's
model part.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scoring.config import ScoringConfig
from scoring.engagement import PopulationCalibrator
from scoring.features import FEATURE_INDEX, FEATURE_NAMES
from scoring.priors import LinearPrior, churn_prior, conversion_prior, sigmoid
from scoring.refit import CLIP, RefitLearner
from scoring.validation import ProgressiveValidation, log_loss_of

__all__ = ["Served", "ModelSlot", "ModelBank", "CHURN", "CONVERSION", "CLIP"]

CHURN = "churn"
CONVERSION = "conversion"

# labels between two checks of the recency gate (two AUCs over 320 bins each)
_GATE_EVERY = 64


def _adwin() -> Any:
    """river's ADWIN drift detector, without the rest of ``river.drift``.

    ``river/drift/__init__.py`` also imports KSWIN (and through it ``scipy.stats``),
    the drift datasets and the binary detectors: 0.8-1.2 s of every start of every
    ``pulse`` command, for one class. ``river.drift.adwin`` needs none of it, so it is
    imported under a bare, unexecuted ``river.drift`` package that is dropped again;
    a later ``import river.drift`` runs the real package, which finds this same module
    (``tests/unit/scoring/test_models.py``). Untyped in river: ``Any`` keeps mypy strict.
    """
    if "river.drift" in sys.modules:
        return sys.modules["river.drift"].ADWIN
    spec = importlib.util.find_spec("river.drift")
    if spec is None:  # pragma: no cover - river is a dependency
        raise ImportError("river.drift not found")
    sys.modules["river.drift"] = importlib.util.module_from_spec(spec)
    try:
        return importlib.import_module("river.drift.adwin").ADWIN
    finally:
        del sys.modules["river.drift"]


_ADWIN: Any = _adwin()


@dataclass(frozen=True, slots=True)
class Served:
    """A served probability: its value, what produced it and, if asked, its drivers."""

    probability: float
    version: str
    is_model: bool
    drivers: list[tuple[str, float]]


def _top(contributions: list[tuple[str, float]], n: int) -> list[tuple[str, float]]:
    return _top_terms([name for name, _ in contributions], [v for _, v in contributions], n)


def _top_terms(names: Sequence[str], terms: Sequence[float], n: int) -> list[tuple[str, float]]:
    """The ``n`` largest non-zero contributions by size, rounded: the ranking of
    ``heapq.nlargest(n, (abs(term), name, term))`` (ties by name), but only the few
    terms at or above the n-th largest size are built into tuples and sorted.

    >>> _top_terms(["a", "b", "c", "d"], [0.5, -2.0, 0.0, 0.5], 2)
    [('b', -2.0), ('d', 0.5)]
    """
    sizes = list(map(abs, terms))
    cut = sorted(sizes, reverse=True)[n - 1] if len(sizes) > n else 0.0
    ranked = sorted(
        [(s, name, t) for s, name, t in zip(sizes, names, terms, strict=False) if s >= cut and s],
        reverse=True,
    )
    return [(name, round(value, 6)) for _, name, value in ranked[:n]]


def _prior_terms(prior: LinearPrior, vector: Sequence[float]) -> list[tuple[str, float]]:
    """``prior.contributions(as_dict(vector))``: a feature the vector lacks reads 0."""
    return [
        (name, w * min(vector[FEATURE_INDEX[name]] if name in FEATURE_INDEX else 0.0, cap))
        for name, w, cap in prior.weights
    ]


def _vector(x: Mapping[str, float]) -> list[float]:
    return [x.get(name, 0.0) for name in FEATURE_NAMES]


class Learner:
    """The SGD learner of checkpoint format 1, kept only so that such checkpoints unpickle
    (:meth:`ModelSlot.__setstate__` then starts the slot's learners afresh)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class ModelSlot:
    """Prior, champion and challenger of one target, with live quality and drift."""

    def __init__(self, name: str, prior: LinearPrior, config: ScoringConfig, seed: int) -> None:
        self.name = name
        self.prior = prior
        self.config = config
        self._seed = seed
        self._spawned = 0
        self.champion = RefitLearner(
            FEATURE_NAMES,
            config.reservoir_labels,
            config.reservoir_half_life_labels,
            config.l2,
            config.refit_every_labels,
            seed,
        )
        self.challenger = self._new_challenger()
        self.generation = 0  # 0: the prior has never been replaced; n >= 1: logreg-vn
        self.prior_serves = True
        self.validation = ProgressiveValidation(config.metrics_half_life_labels)
        # the prior and the champion scored on the same labels (the recency gate)
        self.prior_check = ProgressiveValidation(config.metrics_half_life_labels)
        self.champion_check = ProgressiveValidation(config.metrics_half_life_labels)
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
        self.fallbacks = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "prior_serves" in state:
            self.__dict__.update(state)
            return
        # a checkpoint of format 1 (SGD learners): its learners cannot serve in this
        # version; the slot starts afresh from the prior and learns again from labels
        self.__init__(  # type: ignore[misc]
            state["name"], state["prior"], state["config"], state["_seed"]
        )

    def _new_challenger(self) -> RefitLearner:
        self._spawned += 1
        return RefitLearner(
            FEATURE_NAMES,
            self.config.challenger_reservoir_labels,
            self.config.challenger_reservoir_half_life_labels,
            self.config.l2,
            max(1, self.config.refit_every_labels // 4),
            self._seed + 7919 * self._spawned,
        )

    @property
    def version(self) -> str:
        """What serves now: ``<name>-prior`` or ``<name>-logreg-v<n>``."""
        if self.prior_serves:
            return f"{self.name}-prior"
        return f"{self.name}-logreg-v{self.generation}"

    def _ready(self, learner: RefitLearner) -> bool:
        need = self.config.min_labels_for_model
        negatives = learner.labels - learner.positives
        return (
            learner.fitted
            and learner.labels >= need
            and min(learner.positives, negatives) >= need / 10
        )

    def serve(self, x: Mapping[str, float], explain: bool = False) -> Served:
        """The probability to publish for ``x`` (with top drivers when ``explain``)."""
        if self.prior_serves:
            p = self.prior.predict(x)
            drivers = _top(self.prior.contributions(x), self.config.top_drivers) if explain else []
            return Served(p, self.version, False, drivers)
        if not explain:
            return Served(self.champion.predict(x), self.version, True, [])
        p, contributions = self.champion.explain(x)
        return Served(p, self.version, True, _top(contributions, self.config.top_drivers))

    def serve_vector(self, vector: Sequence[float], explain: bool = False) -> Served:
        """:meth:`serve` for a vector in FEATURE_NAMES order (the engine's fast path)."""
        if self.prior_serves:  # as serve(as_dict(vector)) computes it, without the dict
            named = _prior_terms(self.prior, vector)
            p = sigmoid(self.prior.intercept + sum(c for _, c in named))
            drivers = _top(named, self.config.top_drivers) if explain else []
            return Served(p, self.version, False, drivers)
        logit, names, terms = self.champion.active_terms(vector)
        if not explain:
            return Served(sigmoid(logit), self.version, True, [])
        drivers = _top_terms(names, terms, self.config.top_drivers)
        return Served(sigmoid(logit), self.version, True, drivers)

    def learn(self, x: Mapping[str, float], y: int, served: float) -> tuple[bool, bool]:
        """Score a delayed label, then learn it. Returns (drift detected, promoted)."""
        return self.learn_vector(_vector(x), y, served)

    def learn_vector(self, vector: list[float], y: int, served: float) -> tuple[bool, bool]:
        """:meth:`learn` for a vector in FEATURE_NAMES order (the engine's fast path)."""
        self.labels_seen += 1
        self.validation.update(served, y)
        champion_p = self.champion.predict_vector(vector)
        if self.champion.fitted:
            self.champion_check.update(champion_p, y)
            prior = self.prior
            prior_p = sigmoid(prior.intercept + sum(c for _, c in _prior_terms(prior, vector)))
            self.prior_check.update(prior_p, y)
        promoting = self.config.promote_challenger
        if promoting:
            self._score_challenger(vector, y, champion_p)

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
        if promoting and self.patience > 0:
            self.patience -= 1
            if self._challenger_wins():
                self._promote()
                promoted = True

        self.champion.learn(vector, y)
        if promoting:
            self.challenger.learn(vector, y)
        if self.labels_seen % _GATE_EVERY == 0:
            self._gate()
        return drifted, promoted

    def _score_challenger(self, vector: list[float], y: int, champion_p: float) -> None:
        """Both models' recent log loss on this label, before either learns it."""
        challenger_p = self.challenger.predict_vector(vector)
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

    def _gate(self) -> None:
        """Serve the champion only while it ranks recent labels as well as the prior."""
        if not self._ready(self.champion):
            return
        model_auc, prior_auc = self.champion_check.roc_auc(), self.prior_check.roc_auc()
        if model_auc is None or prior_auc is None:
            return
        if self.prior_serves and model_auc >= prior_auc - self.config.prior_auc_tolerance:
            self.prior_serves = False
            self.generation = max(1, self.generation)
        elif not self.prior_serves and model_auc < prior_auc - self.config.fallback_auc_margin:
            self.prior_serves = True
            self.fallbacks += 1

    def _challenger_wins(self) -> bool:
        if self.champion_loss is None or self.challenger_loss is None:
            return False
        if self.challenger_labels < self.config.min_labels_for_model:
            return False
        if not self._ready(self.challenger):
            return False
        return self.challenger_loss < self.champion_loss * (1.0 - self.config.promotion_margin)

    def _promote(self) -> None:
        # recalibration: the champion refits on the challenger's recent sample at once
        self.champion.adopt(self.challenger)
        self.champion_loss = self.challenger_loss
        self.challenger = self._new_challenger()
        self.challenger.adopt(self.champion)
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
        # the event-time hour of the last quality report, and each model's labels then
        self.reported_hour = float("-inf")
        self.reported_labels: dict[str, int] = {}
        # the event-time midnight of the last daily batch of scores
        self.scored_day = float("-inf")

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("reported_hour", float("-inf"))  # checkpoints from before them
        state.setdefault("reported_labels", {})
        state.setdefault("scored_day", float("-inf"))
        self.__dict__.update(state)

    def slot(self, name: str) -> ModelSlot:
        """The slot of a target name."""
        return self.churn if name == CHURN else self.conversion

    @property
    def slots(self) -> tuple[ModelSlot, ModelSlot]:
        """Both slots, churn first."""
        return (self.churn, self.conversion)
