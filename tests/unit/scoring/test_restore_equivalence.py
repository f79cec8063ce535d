"""A restore from what a checkpoint seals continues exactly as an engine that never stopped.

A partition task seals, at each checkpoint, the models and the records of the
members :meth:`ScoringEngine.drain_touched` names (changed since the last
drain). The test runs a simulated community through one engine, draining and
"sealing" after every few events as a task does; at several cut points it
restores a fresh engine from the sealed records alone and runs it on the rest.
Every output after the cut -- scores, transitions, labels, model metrics -- must
equal the uninterrupted run's. A member changed but not named (a timer that
only settles a label, say) restores stale, and learns that label twice.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from schemas.envelope import EventBase
from schemas.registry import EVENT_MODELS
from scoring.engine import ScoringEngine
from scoring.records import Record
from scoring.state import MemberState
from streams.simulator import SimulationConfig, simulate

pytestmark = pytest.mark.unit

PARTITION = 0
SEAL_EVERY = 37  # events between checkpoints (odd: cuts fall between ticks and events)
CUTS = 40  # restores along the run


def _events() -> list[EventBase]:
    config = SimulationConfig(members=120, days=60, seed=21)
    events = [EVENT_MODELS[str(e["event_type"])].model_validate(e) for e in simulate(config)]
    return sorted(events, key=lambda e: e.occurred_at)


def _step(engine: ScoringEngine, event: EventBase) -> list[Record]:
    """An event, then the clock to it: as a task applies a release, then ticks."""
    out = engine.process(event, partition=PARTITION)
    out += engine.advance(PARTITION, event.occurred_at - timedelta(hours=1))
    return out


def _rows(records: list[Record]) -> list[str]:
    return [json.dumps(r.to_row(), sort_keys=True, default=str) for r in records]


class _Store:
    """The sealed records of a task: models, and each member as last sealed."""

    def __init__(self) -> None:
        self.models = b""
        self.members: dict[str, dict[str, Any] | None] = {}

    def seal(self, engine: ScoringEngine) -> None:
        for member_id in engine.drain_touched():
            state = engine.states.get(member_id)
            self.members[member_id] = None if state is None else state.to_dict()
        self.models = engine.models_checkpoint()

    def restore(self) -> ScoringEngine:
        engine = ScoringEngine()
        engine.restore_models(self.models)
        for data in json.loads(json.dumps(self.members)).values():  # through JSON, as sealed
            if data is not None:
                engine.load_member(MemberState.from_dict(data), PARTITION)
        engine.drain_touched()  # loading is not a change
        return engine


def test_a_restored_engine_continues_as_one_that_never_stopped() -> None:
    events = _events()
    straight = ScoringEngine()
    expected = [_rows(_step(straight, e)) for e in events]
    assert straight.stats.labels > 100 and straight.stats.silence_rescored > 50

    running, store = ScoringEngine(), _Store()
    i = sealed_through = 0
    for cut in [len(events) * k // CUTS for k in range(1, CUTS + 1)]:
        while i < cut:
            assert _rows(_step(running, events[i])) == expected[i], f"event {i}"
            i += 1
            if i % SEAL_EVERY == 0:
                store.seal(running)
                sealed_through = i
        # the cut: what was not sealed is lost, as with a SIGKILL, and the events since
        # the last seal are delivered again
        running, i = store.restore(), sealed_through


def test_every_change_of_a_member_is_reported_once_drained() -> None:
    engine = ScoringEngine()
    before: dict[str, dict[str, Any]] = {}
    for event in _events():
        _step(engine, event)
        touched = engine.drain_touched()
        after = {m: s.to_dict() for m, s in engine.states.items()}
        changed = {m for m in after.keys() | before.keys() if after.get(m) != before.get(m)}
        assert changed <= touched, f"changed but not reported: {sorted(changed - touched)}"
        before = after
