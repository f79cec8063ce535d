"""Model conformance: pickling round trip, missing and new features, seeded determinism."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from scoring_fixtures import MakeEvent, day

from schemas.errors import PulseError
from scoring.config import ScoringConfig
from scoring.engine import ScoringEngine
from scoring.errors import CheckpointError, ScoringError
from scoring.features import FEATURE_NAMES
from scoring.models import ModelSlot
from scoring.priors import churn_prior, conversion_prior
from scoring.state import MemberState

pytestmark = pytest.mark.unit

# recency separates the engine stories here perfectly; the model may serve within 0.05
# of the prior's AUC, so that these tests exercise a learned model
CONFIG = ScoringConfig(min_labels_for_model=50, prior_auc_tolerance=0.05)


def _trained_slot(seed: int = 0, n: int = 600) -> ModelSlot:
    # a reservoir smaller than the stream, so that the seed (sampling) matters
    config = ScoringConfig(min_labels_for_model=50, seed=seed, reservoir_labels=300)
    slot = ModelSlot("churn", churn_prior(30.0), config, seed)
    rng = random.Random(1)
    for _ in range(n):
        recency = rng.uniform(0, 30)
        activity = rng.uniform(0, 5)
        y = int(recency / 30 - activity / 10 + rng.gauss(0, 0.2) > 0.4)
        slot.learn({"recency_days": recency, "activity_long": activity}, y, 0.5)
    return slot


def _story(
    engine: ScoringEngine, make_event: MakeEvent, start: float, members: int
) -> list[object]:
    out: list[object] = []
    for i in range(members):
        out += engine.process(make_event("post_created", f"m-{i}", start + i * 0.01))
        if i % 3:
            out += engine.process(make_event("content_viewed", f"m-{i}", start + 8 + i * 0.01))
    out += engine.advance(0, day(start + 40))
    return out


def _rows(records: list[object]) -> list[dict[str, object]]:
    return [r.to_row() for r in records]  # type: ignore[attr-defined]


def test_checkpoint_round_trip_gives_identical_predictions_and_learning(
    make_event: MakeEvent,
) -> None:
    engine = ScoringEngine(CONFIG)
    _story(engine, make_event, 0, 120)
    assert engine.models.churn.generation >= 1  # the model serves, not the prior
    # a restart: models from the checkpoint, members from their stored dicts
    clone = ScoringEngine(CONFIG)
    clone.restore_models(engine.models_checkpoint())
    for state in engine.states.values():
        clone.load_member(MemberState.from_dict(state.to_dict()), partition=0)
    at = day(45)
    assert [engine.score_member(m, at).to_row() for m in sorted(engine.states)] == [
        clone.score_member(m, at).to_row() for m in sorted(clone.states)
    ]
    # both keep learning identically
    assert _rows(_story(engine, make_event, 50, 60)) == _rows(_story(clone, make_event, 50, 60))
    # (bytes may differ through pickle's memo of shared objects; behaviour may not)
    assert [engine.score_member(m, day(95)).to_row() for m in sorted(engine.states)] == [
        clone.score_member(m, day(95)).to_row() for m in sorted(clone.states)
    ]


def test_restore_refuses_foreign_or_corrupt_blobs() -> None:
    engine = ScoringEngine()
    with pytest.raises(CheckpointError):
        engine.restore_models(b"not a checkpoint")
    blob = engine.models_checkpoint()
    with pytest.raises(CheckpointError) as info:
        engine.restore_models(blob[:-20])
    assert isinstance(info.value, ScoringError) and isinstance(info.value, PulseError)


def test_missing_and_new_features_are_tolerated() -> None:
    slot = _trained_slot()
    full = {"recency_days": 25.0, "activity_long": 0.5}
    assert 0.0 < slot.serve({}).probability < 1.0
    partial = slot.serve({"recency_days": 25.0}).probability
    assert 0.0 < partial < 1.0
    with_new = slot.serve({**full, "brand_new_feature": 3.0}, explain=True)
    assert with_new.probability == slot.serve(full).probability
    assert "brand_new_feature" not in dict(with_new.drivers)
    slot.learn({**full, "brand_new_feature": 3.0}, 1, 0.5)  # learning a new one is fine
    assert 0.0 < slot.serve({"brand_new_feature": 1.0}).probability < 1.0


def test_short_snapshot_vectors_from_older_versions_still_learn() -> None:
    slot = _trained_slot()
    from scoring.features import as_dict

    old = as_dict([3.0] * (len(FEATURE_NAMES) - 10))
    slot.learn(old, 0, 0.4)
    assert slot.labels_seen == 601


def test_seeded_determinism() -> None:
    x = {"recency_days": 12.0, "activity_long": 2.0}
    same = [_trained_slot(seed=5).serve(x).probability for _ in range(2)]
    assert same[0] == same[1]
    assert _trained_slot(seed=6).serve(x).probability != same[0]


def test_engines_with_equal_seeds_produce_equal_outputs(make_event: MakeEvent) -> None:
    a, b = ScoringEngine(CONFIG), ScoringEngine(CONFIG)
    assert _rows(_story(a, make_event, 0, 90)) == _rows(_story(b, make_event, 0, 90))
    assert a.models_checkpoint() == b.models_checkpoint()


def _labelled(slot: ModelSlot, n: int, rng: random.Random, sign: float) -> None:
    """Labels that recency explains in part and activity (with ``sign``) in part."""
    for _ in range(n):
        recency, activity = rng.uniform(0, 30), rng.uniform(0, 5)
        y = int(recency / 30 + sign * (activity - 2.5) / 2.5 + rng.gauss(0, 0.3) > 0.5)
        x = {"recency_days": recency, "activity_long": activity}
        slot.learn(x, y, slot.serve(x).probability)


def test_the_model_replaces_the_recency_prior_only_when_it_ranks_better() -> None:
    config = ScoringConfig(min_labels_for_model=100, reservoir_half_life_labels=500.0)
    slot = ModelSlot("churn", churn_prior(30.0), config, 0)
    rng = random.Random(2)
    _labelled(slot, 99, rng, -1.0)
    assert slot.version == "churn-prior"  # not enough labels yet
    _labelled(slot, 400, rng, -1.0)
    model_auc, prior_auc = slot.champion_check.roc_auc(), slot.prior_check.roc_auc()
    assert model_auc is not None and prior_auc is not None and model_auc > prior_auc
    assert slot.version == "churn-logreg-v1" and slot.serve({}).is_model
    # the activity effect turns around: the champion now ranks worse than recency
    # until it has re-learned, and the prior serves again in the meantime
    _labelled(slot, 600, rng, +1.0)
    assert slot.fallbacks >= 1
    served = slot.serve({"recency_days": 3.0, "activity_long": 4.0})
    assert slot.prior_serves or served.is_model  # whichever serves, it says so
    _labelled(slot, 3000, rng, +1.0)
    assert not slot.prior_serves  # the re-learned champion ranks better again
    high = slot.serve({"recency_days": 15.0, "activity_long": 4.5}).probability
    low = slot.serve({"recency_days": 15.0, "activity_long": 0.5}).probability
    assert high > low


def test_the_prior_keeps_serving_where_recency_is_all_there_is() -> None:
    config = ScoringConfig(min_labels_for_model=100)
    slot = ModelSlot("churn", churn_prior(30.0), config, 0)
    rng = random.Random(4)
    for _ in range(3000):  # the label is recency itself: nothing to learn beyond it
        recency = rng.uniform(0, 30)
        x = {"recency_days": recency, "nps": rng.gauss(0, 1)}
        slot.learn(x, int(recency > 15.0), slot.serve(x).probability)
    assert slot.champion.fitted and slot._ready(slot.champion)
    assert slot.version == "churn-prior"


def test_a_checkpoint_of_the_sgd_format_restores_to_fresh_learners(make_event: MakeEvent) -> None:
    """A models checkpoint written by the previous version (SGD learners, checkpoint
    format 1) restores: the slots start again from the prior and learn on."""
    from pathlib import Path

    blob = (Path(__file__).parent / "data" / "models-v1.ckpt").read_bytes()
    engine = ScoringEngine(CONFIG)
    engine.restore_models(blob)
    assert engine.models.churn.version == "churn-prior"
    assert engine.models.population is not None
    _story(engine, make_event, 0, 120)
    assert engine.models.churn.version == "churn-logreg-v1"
    assert engine.score_member("m-1", day(41)).churn_model == "model"


def test_a_prior_serves_a_vector_as_it_serves_the_same_features_as_a_dict() -> None:
    """Issue 9: the vector path of a prior skips the dict; it must give the same numbers."""
    from scoring.features import as_dict

    rng = random.Random(9)
    for name, prior in (("churn", churn_prior(30.0)), ("conversion", conversion_prior())):
        slot = ModelSlot(name, prior, ScoringConfig(), 1)
        assert slot.prior_serves
        for _ in range(2_000):
            vector = [rng.choice((0.0, rng.uniform(-5.0, 60.0))) for _ in FEATURE_NAMES]
            for explain in (False, True):
                assert slot.serve_vector(vector, explain) == slot.serve(as_dict(vector), explain)


def test_the_drift_detector_comes_without_the_rest_of_river_drift() -> None:
    """Issue 9 (restore): importing the models does not pull in ``scipy.stats`` through
    river's KSWIN (0.8-1.2 s of every start), and a later ``import river.drift`` gets the
    very class the models use (their pickles name ``river.drift.adwin.ADWIN``)."""
    probe = (
        "import pickle, sys\n"
        "from scoring.models import _ADWIN\n"
        "detector = _ADWIN()\n"
        "print('scipy.stats' in sys.modules, 'river.drift' in sys.modules)\n"
        "from river import drift\n"
        "print(drift.ADWIN is _ADWIN, type(pickle.loads(pickle.dumps(detector))) is _ADWIN)\n"
        "print(sorted(n for n in ('KSWIN', 'PageHinkley', 'binary') if hasattr(drift, n)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split("\n")
    assert out[:3] == ["False False", "True True", "['KSWIN', 'PageHinkley', 'binary']"]


def test_serving_reads_only_the_features_with_a_slope() -> None:
    """A feature without variance in the sample gets no slope: serving skips it, and the
    log-odds and drivers are those of every feature's contribution (zeros add nothing)."""
    import pickle

    from scoring.models import _top_terms
    from scoring.refit import RefitLearner

    rng = random.Random(7)
    learner = RefitLearner(
        FEATURE_NAMES, capacity=500, half_life=1e6, l2=1.0, refit_every=50, seed=1
    )
    width = len(FEATURE_NAMES)
    for _ in range(400):  # only the first 10 features vary; the rest are always 0
        x = [rng.gauss(0.0, 1.0) for _ in range(10)] + [0.0] * (width - 10)
        learner.learn(x, int(x[0] + rng.gauss(0.0, 0.5) > 0))
    assert learner.fitted
    restored = pickle.loads(pickle.dumps(learner))
    for model in (learner, restored):
        _, names, _ = model.active_terms([0.0] * width)
        assert 0 < len(names) <= 10  # the features that never varied have no slope
    for _ in range(200):  # serving sees values the sample never had, zeros included
        x = [rng.choice((0.0, rng.gauss(0.0, 3.0))) for _ in range(width)]
        logit, terms = learner.contributions_vector(x)
        fast, names, active = restored.active_terms(x)
        assert fast == logit
        assert _top_terms(names, active, 5) == _top_terms(FEATURE_NAMES, terms, 5)
        assert learner.predict_vector(x) == restored.predict_vector(x)
    shorter = [1.0] * (width - 3)  # an older snapshot: every feature it has
    assert restored.active_terms(shorter)[0] == learner.contributions_vector(shorter)[0]
