"""The scoring engine: events in, scores, lifecycle transitions, labels and model quality out.

One :class:`ScoringEngine` serves the partitions a worker owns. Per event it
checks idempotency, advances the partition's event-time clock (firing the
silence timers that came due), applies the event to the member's state,
resolves the delayed labels the event answers (each scored, then learned),
scores the member, moves the lifecycle and, now and then, takes a snapshot
that will be labelled later. Member states live in the mapping the caller
passes (a dict the pipeline checkpoints to ClickHouse and a Faust table); learned state lives in a
:class:`~scoring.models.ModelBank` that pickles through
:meth:`ScoringEngine.models_checkpoint`.

>>> from datetime import datetime, UTC
>>> from uuid import UUID
>>> from schemas.interactions import PostCreated
>>> engine = ScoringEngine()
>>> event = PostCreated(event_id=UUID(int=1), event_type="post_created",
...     occurred_at=datetime(2026, 3, 1, tzinfo=UTC), member_id="m-1", channel="app",
...     properties={"post_id": "p-1"})
>>> [type(r).__name__ for r in engine.process(event)]
['LifecycleTransition', 'ScoreRecord']
>>> engine.process(event)  # the same event again changes nothing
[]
>>> engine.score_member("m-1", datetime(2026, 3, 1, tzinfo=UTC)).model_version
'churn-prior'
"""

from __future__ import annotations

import math
import pickle
from array import array
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime

from schemas.envelope import EventBase
from schemas.interactions import ConsentChanged
from scoring.activity import Applied, apply_event, event_digest, event_type_of
from scoring.clock import DAY, PartitionClock, from_ts, to_ts
from scoring.config import ScoringConfig
from scoring.engagement import EngagementTier, bin_of, engagement_raw, tier_of
from scoring.errors import CheckpointError, UnknownMember
from scoring.features import FEATURE_INDEX, compute_features
from scoring.labels import (
    Resolution,
    add_snapshot,
    next_deadline,
    resolve_expired,
    resolve_on_event,
    takes_churn_label,
)
from scoring.lifecycle import Facts, initial_stage, on_event, on_silence
from scoring.models import ModelBank, ModelSlot, Served
from scoring.records import (
    LabelApplied,
    LifecycleTransition,
    ModelMetrics,
    Record,
    ScoreRecord,
    Trigger,
)
from scoring.state import MemberState, Ticket
from scoring.timers import TimerHeap

__all__ = ["ScoringEngine", "EngineStats", "DEFAULT_CONFIG", "risk_band"]

DEFAULT_CONFIG = ScoringConfig()
_CHECKPOINT_MAGIC = b"PULSE-SCORING-MODELS\x00v1\x00"
_ENGAGED = frozenset({EngagementTier.ENGAGED.value, EngagementTier.CHAMPION.value})
_EPS = 1e-6  # seconds: tolerance when comparing event times computed two ways
_RECENCY = FEATURE_INDEX["recency_days"]
_QUOTE_RECENT = FEATURE_INDEX["quote_recent"]
_APPLICATION_RECENT = FEATURE_INDEX["application_recent"]
_LVL_PRODUCT = FEATURE_INDEX["lvl_product"]
_FEATURES = len(FEATURE_INDEX)


def risk_band(probability: float, config: ScoringConfig) -> str:
    """``low`` / ``medium`` / ``high`` for a churn probability.

    >>> [risk_band(p, DEFAULT_CONFIG) for p in (0.1, 0.3, 0.59, 0.6)]
    ['low', 'medium', 'medium', 'high']
    """
    if probability >= config.risk_high_min:
        return "high"
    if probability >= config.risk_medium_min:
        return "medium"
    return "low"


@dataclass
class EngineStats:
    """Counters of the engine's work (for benchmarks, metrics and cost tests)."""

    events: int = 0
    duplicates: int = 0
    scores: int = 0
    labels: int = 0
    timers_fired: int = 0
    """Timer entries that found their member due and did work."""
    timers_deferred: int = 0
    """Timer entries whose member was not due any more (its state changed without a
    reschedule, e.g. restored): rescheduled, nothing else."""
    silence_rescored: int = 0
    """Scores produced by silence boundaries (trigger ``silence``)."""
    daily_scores: int = 0
    """Scores of the daily batch that keeps every member's latest score current
    (trigger ``daily``)."""
    late: int = 0
    """Events older than their partition's watermark when applied (the clock ran ahead)."""
    opted_out: int = 0
    """Events of members who withdrew analytics consent: dropped, nothing learned."""


@dataclass(frozen=True, slots=True)
class _Scored:
    vector: array[float]
    engagement: float
    tier: str
    churn: Served
    risk: str
    conversion: Served | None


class ScoringEngine:
    """Scores members from their events; see the module docstring."""

    def __init__(
        self,
        config: ScoringConfig = DEFAULT_CONFIG,
        states: MutableMapping[str, MemberState] | None = None,
    ) -> None:
        self.config = config
        self.states: MutableMapping[str, MemberState] = {} if states is None else states
        self.models = ModelBank(config)
        self.stats = EngineStats()
        self._clocks: dict[int, PartitionClock] = {}
        self._timers: dict[int, TimerHeap] = {}
        self._half_lives = config.half_lives_seconds
        self._boundaries = config.timer_boundaries_days
        self._intent_floor = math.log1p(config.intent_content_views)
        self._touched: set[str] = set()  # members whose state changed since drain_touched

    # -- the API ----------------------------------------------------------------------

    def process(self, event: EventBase, partition: int = 0) -> list[Record]:
        """Apply one event; return what it produced ([] if the event was already applied).

        Also advances the partition's clock: records of silence timers that came
        due come first, in event-time order.
        """
        member_id = event.member_id
        digest = event_digest(event)
        state = self.states.get(member_id)
        if state is not None and state.seen(digest):
            self.stats.duplicates += 1
            return []
        self.stats.events += 1
        self._touched.add(member_id)
        at = to_ts(event.occurred_at)
        clock = self._clock(partition)
        if clock.watermark is not None and at < clock.watermark:
            self.stats.late += 1
        clock.observe(at)
        out = self._fire(partition)
        event_type = event_type_of(event)
        if event_type == "erasure_requested":
            self._erase(member_id, partition)
            return out
        if isinstance(event, ConsentChanged) and not event.properties.analytics:
            self._opt_out(member_id, partition, at, digest, event.properties.marketing)
            return out
        state = self.states.get(member_id)
        if state is not None and state.opted_out:
            if event_type != "consent_changed":  # behaviour of an opted-out member: dropped
                self.stats.opted_out += 1
                return out
            del self.states[member_id]  # analytics consent given again: from scratch
            state = None
        is_new = state is None
        if state is None:
            state = MemberState(member_id, at)
        done_before = state.silence_done_days
        applied = apply_event(state, event, self._half_lives)
        state.remember(digest, self.config.recent_event_ids)
        if applied.silence_before_days is not None:
            out.extend(self._catch_up_silence(state, applied, done_before))
        for resolution in resolve_on_event(state, applied):
            out.extend(self._learn(state, resolution))
        out.extend(self._score(state, state.last_event_at, "event", event_type, applied, is_new))
        self._schedule(state, partition)
        self.states[member_id] = state
        return out

    def advance(self, partition: int, watermark: datetime) -> list[Record]:
        """Tick a partition's event-time clock to ``watermark``; fire the timers now due."""
        self._clock(partition).tick(to_ts(watermark))
        return self._fire(partition)

    def watermark(self, partition: int) -> datetime | None:
        """The partition's current watermark, None before its first event or tick."""
        clock = self._clocks.get(partition)
        if clock is None or clock.watermark is None:
            return None
        return from_ts(clock.watermark)

    def load_member(self, state: MemberState, partition: int) -> None:
        """Register a member restored from a checkpoint and rebuild its timers."""
        if state.member_id not in self.states:
            self.states[state.member_id] = state
        self._clock(partition)
        if not state.opted_out:
            self._schedule(state, partition)

    def drain_touched(self) -> set[str]:
        """The members whose state changed (or went) since the last call: the records a
        checkpoint must seal. Not only the scored ones: a timer that settles a label
        changes a member without scoring them."""
        touched, self._touched = self._touched, set()
        return touched

    def opted_out(self, member_id: str) -> bool:
        """Whether the member withdrew analytics consent (their behaviour is not scored,
        learned from, or to be stored; the consent events themselves are kept)."""
        state = self.states.get(member_id)
        return state is not None and state.opted_out

    def marketing_allowed(self, member_id: str) -> bool:
        """Whether alerts about the member may go to outside systems (webhooks): a member
        this engine holds, scored, who did not withdraw marketing consent."""
        state = self.states.get(member_id)
        return state is not None and state.consent_marketing and not state.opted_out

    def drop_partition(self, partition: int) -> None:
        """Forget a revoked partition's clock and timers (member states stay with the caller)."""
        self._clocks.pop(partition, None)
        self._timers.pop(partition, None)

    def models_checkpoint(self) -> bytes:
        """The learned state (models, validation, drift, population) as bytes."""
        return _CHECKPOINT_MAGIC + pickle.dumps(self.models, protocol=pickle.HIGHEST_PROTOCOL)

    def restore_models(self, blob: bytes) -> None:
        """Replace the learned state by a :meth:`models_checkpoint` blob.

        The blob must come from this application's own checkpoint store: like any
        pickle, it is trusted code. A blob without our header is refused.
        """
        if not blob.startswith(_CHECKPOINT_MAGIC):
            raise CheckpointError("not a scoring models checkpoint (bad header)")
        try:
            models = pickle.loads(blob[len(_CHECKPOINT_MAGIC) :])  # noqa: S301 - our own blob
        except Exception as exc:
            raise CheckpointError(f"corrupt models checkpoint: {type(exc).__name__}") from exc
        if not isinstance(models, ModelBank):
            raise CheckpointError(f"checkpoint holds {type(models).__name__}, not a ModelBank")
        self.models = models

    def model_metrics(self, at: datetime) -> list[ModelMetrics]:
        """Current live quality of each model (drift and promotion flags reported once)."""
        ts = to_ts(at)
        return [self._metrics(slot, ts) for slot in self.models.slots]

    def score_member(self, member_id: str, at: datetime) -> ScoreRecord:
        """Score a member at ``at`` without changing any state."""
        state = self.states.get(member_id)
        if state is None or state.opted_out:
            raise UnknownMember(member_id)
        ts = max(to_ts(at), state.last_event_at)
        return self._read(state, ts, "event" if ts <= state.last_event_at else "silence")

    def _read(self, state: MemberState, at: float, trigger: Trigger) -> ScoreRecord:
        """The member's score at ``at``, changing nothing (policies expire on a copy)."""
        if any(policy[3] <= at for policy in state.policies.values()):
            state = MemberState.from_dict(state.to_dict())
            state.expire_policies(at)
        raw = engagement_raw(state, at, self._half_lives[1])
        return self._record(state, at, trigger, self._compute(state, at, True, raw))

    def daily_scores(self, partition: int) -> list[ScoreRecord]:
        """Every member scored as of the last event-time midnight the partition's clock
        passed, if no batch was taken at or after it ([] otherwise).

        Readers rank members by their latest stored score, so each one must be
        current: at most a day old and from the model that serves now, silent or not.
        The batch holds every member not already scored at or after that midnight (an
        event inside the allowed lateness can be), in member id order, all with the
        same ``scored_at`` and models (trigger ``daily``). The caller takes it when it
        is caught up with its input (a backlog replayed gets one batch, at its end). A
        read of the member states: nothing is learned, no lifecycle moves, no label
        snapshot is taken, and the member states do not change.
        """
        day = self._daily_due(partition)
        if day is None:
            return []
        self.models.scored_day = day
        out: list[ScoreRecord] = []
        states = self.states
        for member_id in sorted(states):
            state = states[member_id]
            last = state.last_scored_at
            if state.opted_out or last is None or last >= day:
                continue
            out.append(self._read(state, day, "daily"))
        self.stats.daily_scores += len(out)
        return out

    def _daily_due(self, partition: int) -> float | None:
        """The midnight of a daily batch not taken yet (None: none is due)."""
        clock = self._clocks.get(partition)
        if clock is None or clock.watermark is None:
            return None
        day = clock.watermark - clock.watermark % DAY
        return day if day > self.models.scored_day else None

    def daily_due(self, partition: int) -> bool:
        """Whether :meth:`daily_scores` would return a batch."""
        return self._daily_due(partition) is not None

    def latest_score(self, member_id: str) -> ScoreRecord:
        """The member's score where ``member_scores`` has its latest row: at its last
        score, or at the last daily batch if that is later (see :meth:`daily_scores`)."""
        state = self.states.get(member_id)
        if state is None or state.opted_out or state.last_scored_at is None:
            raise UnknownMember(member_id)
        day = self.models.scored_day
        if state.last_scored_at >= day:
            return self.score_member(member_id, from_ts(state.last_scored_at))
        return self._read(state, day, "daily")

    # -- clock and timers -------------------------------------------------------------

    def _clock(self, partition: int) -> PartitionClock:
        clock = self._clocks.get(partition)
        if clock is None:
            clock = self._clocks[partition] = PartitionClock(self.config.allowed_lateness_seconds)
            self._timers[partition] = TimerHeap()
        return clock

    def _silence_ref(self, state: MemberState) -> float:
        last = state.last_activity_at
        return state.first_seen_at if last is None else last

    def _next_due(self, state: MemberState) -> float | None:
        ref = self._silence_ref(state)
        due = next_deadline(state, ref + self._boundaries[-1] * DAY)
        for boundary in self._boundaries:
            if boundary > state.silence_done_days + 1e-9:
                candidate = ref + boundary * DAY
                if due is None or candidate < due:
                    due = candidate
                break
        return due

    def _schedule(self, state: MemberState, partition: int) -> None:
        due = self._next_due(state)
        if due is not None:
            self._timers[partition].schedule(state.member_id, due)

    def _fire(self, partition: int) -> list[Record]:
        clock = self._clocks[partition]
        timers = self._timers[partition]
        out: list[Record] = []
        if clock.watermark is None:
            return out
        while (item := timers.pop_due(clock.watermark)) is not None:
            member_id, due = item
            state = self.states.get(member_id)
            if state is not None and not state.opted_out:
                self._touched.add(member_id)
                out.extend(self._on_timer(state, due, partition))
        out.extend(self._hourly_report(clock.watermark))
        return out

    def _hourly_report(self, watermark: float) -> list[Record]:
        """Each model's live quality at most once per event-time hour, at the first event
        or tick of the hour (so the same events give the same reports), if it learned
        from a label since its last report."""
        hour = watermark - watermark % 3600.0
        bank = self.models
        if hour <= bank.reported_hour:
            return []
        bank.reported_hour = hour
        out: list[Record] = []
        for slot in bank.slots:
            if slot.labels_seen > bank.reported_labels.get(slot.name, 0):
                bank.reported_labels[slot.name] = slot.labels_seen
                out.append(self._metrics(slot, hour))
        return out

    def _on_timer(self, state: MemberState, due: float, partition: int) -> list[Record]:
        real = self._next_due(state)
        if real is None:
            return []
        if real > due + _EPS:
            self._timers[partition].schedule(state.member_id, real)
            self.stats.timers_deferred += 1
            return []
        self.stats.timers_fired += 1
        out: list[Record] = []
        for resolution in resolve_expired(state, real + _EPS):
            out.extend(self._learn(state, resolution))
        silent = (real - self._silence_ref(state)) / DAY
        crossed = [
            b for b in self._boundaries if state.silence_done_days + 1e-9 < b <= silent + 1e-6
        ]
        if crossed:
            state.silence_done_days = crossed[-1]
            self.stats.silence_rescored += 1
            out.extend(self._score(state, real, "silence", "silence", None, False))
        self._schedule(state, partition)
        self.states[state.member_id] = state
        return out

    # -- scoring ----------------------------------------------------------------------

    def _compute(self, state: MemberState, at: float, explain: bool, raw: float) -> _Scored:
        vector = compute_features(state, at, self._half_lives)
        engagement = self.models.population.score(raw, at)
        churn = self.models.churn.serve_vector(vector, explain=explain)
        conversion = None if state.policies else self.models.conversion.serve_vector(vector)
        return _Scored(
            vector,
            engagement,
            tier_of(engagement, raw, self.config),
            churn,
            risk_band(churn.probability, self.config),
            conversion,
        )

    def _score(
        self,
        state: MemberState,
        at: float,
        trigger: Trigger,
        cause: str,
        applied: Applied | None,
        is_new: bool,
    ) -> list[Record]:
        state.expire_policies(at)
        raw = engagement_raw(state, at, self._half_lives[1])
        new_bin = bin_of(raw)
        self.models.population.move(state.engagement_bin, state.engagement_binned_at, new_bin, at)
        state.engagement_bin, state.engagement_binned_at = new_bin, at
        scored = self._compute(state, at, True, raw)
        vector = scored.vector
        facts = Facts(
            has_policy=bool(state.policies),
            engaged=scored.tier in _ENGAGED,
            intent=vector[_QUOTE_RECENT] > 0.0
            or vector[_APPLICATION_RECENT] > 0.0
            or vector[_LVL_PRODUCT] >= self._intent_floor,
            risk_high=scored.risk == "high",
        )
        stage = state.stage or initial_stage()
        if applied is not None:
            path = on_event(
                stage, applied.event_type, applied.is_activity, applied.last_policy_ended, facts
            )
        else:
            silent = (at - self._silence_ref(state)) / DAY
            path = on_silence(
                stage,
                silent + 1e-6,
                facts,
                at_risk_days=self.config.at_risk_silence_days,
                churn_days=self.config.churn_window_days,
            )
        if is_new:
            path = [path[-1] if path else stage]
        out: list[Record] = list(self._move(state, path, at, cause))
        self._snapshot(state, at, scored)
        self.stats.scores += 1
        state.last_scored_at = at
        state.last_churn = scored.churn.probability
        state.last_risk = scored.risk
        out.append(self._record(state, at, trigger, scored))
        return out

    def _move(
        self, state: MemberState, path: list[str], at: float, cause: str
    ) -> list[LifecycleTransition]:
        out: list[LifecycleTransition] = []
        when = from_ts(at)
        for stage in path:
            if stage == state.stage:
                continue
            out.append(
                LifecycleTransition(
                    state.member_id, when, state.stage, stage, cause, state.community_id
                )
            )
            state.stage = stage
            state.stage_since = at
        return out

    def _catch_up_silence(
        self, state: MemberState, applied: Applied, done_before: float
    ) -> list[LifecycleTransition]:
        """Silence transitions the timers had not reached when this activity arrived."""
        silence = applied.silence_before_days
        if silence is None or not state.stage:
            return []
        crossed = [b for b in self._boundaries if done_before + 1e-9 < b <= silence]
        if not crossed:
            return []
        facts = Facts(
            has_policy=bool(state.policies),
            engaged=False,
            intent=False,
            risk_high=state.last_risk == "high",
        )
        path = on_silence(
            state.stage,
            crossed[-1],
            facts,
            at_risk_days=self.config.at_risk_silence_days,
            churn_days=self.config.churn_window_days,
        )
        at = applied.at - (silence - crossed[-1]) * DAY
        return self._move(state, path, at, "silence")

    def _snapshot(self, state: MemberState, at: float, s: _Scored) -> None:
        config = self.config
        churn_ticket = conversion_ticket = None
        if takes_churn_label(s.vector[_RECENCY], config) and (
            state.last_snapshot_at is None
            or at - state.last_snapshot_at >= config.snapshot_interval_days * DAY - 1.0
        ):
            churn_ticket = Ticket(
                at + config.churn_window_days * DAY, s.churn.probability, s.churn.version
            )
        if s.conversion is not None and (
            state.last_conversion_snapshot_at is None
            or at - state.last_conversion_snapshot_at
            >= config.conversion_snapshot_interval_days * DAY - 1.0
        ):
            conversion_ticket = Ticket(
                at + config.conversion_window_days * DAY,
                s.conversion.probability,
                s.conversion.version,
            )
        if churn_ticket is not None or conversion_ticket is not None:
            add_snapshot(
                state, at, s.vector, churn_ticket, conversion_ticket, config.max_pending_snapshots
            )

    def _record(self, state: MemberState, at: float, trigger: Trigger, s: _Scored) -> ScoreRecord:
        return ScoreRecord(
            member_id=state.member_id,
            scored_at=from_ts(at),
            trigger=trigger,
            engagement_score=round(s.engagement, 3),
            engagement_tier=s.tier,
            churn_probability=s.churn.probability,
            churn_risk=s.risk,
            churn_model="model" if s.churn.is_model else "prior",
            conversion_probability=None if s.conversion is None else s.conversion.probability,
            lifecycle_stage=state.stage or initial_stage(),
            top_drivers=s.churn.drivers,
            model_version=s.churn.version,
            last_event_at=from_ts(state.last_event_at),
            community_id=state.community_id,
            annual_premium=state.annual_premium,
            active_policies=len(state.policies),
        )

    # -- labels and models ------------------------------------------------------------

    def _learn(self, state: MemberState, resolution: Resolution) -> list[Record]:
        slot = self.models.slot(resolution.model)
        features = resolution.features
        vector = list(features[:_FEATURES])
        if len(vector) < _FEATURES:  # an older snapshot: the features it lacks read 0
            vector += [0.0] * (_FEATURES - len(vector))
        drifted, promoted = slot.learn_vector(vector, resolution.label, resolution.ticket.served)
        self.stats.labels += 1
        out: list[Record] = [
            LabelApplied(
                model=resolution.model,
                member_id=state.member_id,
                label=resolution.label,
                snapshot_at=from_ts(resolution.snapshot_at),
                label_at=from_ts(resolution.label_at),
                prediction=resolution.ticket.served,
                model_version=resolution.ticket.version,
            )
        ]
        if drifted or promoted:
            out.append(self._metrics(slot, resolution.label_at))
        return out

    def _metrics(self, slot: ModelSlot, at: float) -> ModelMetrics:
        v = slot.validation
        metrics = ModelMetrics(
            model=slot.name,
            model_version=slot.version,
            at=from_ts(at),
            labels_seen=slot.labels_seen,
            roc_auc=v.roc_auc(),
            log_loss=v.log_loss(),
            calibration_error=v.calibration_error(),
            positive_rate=v.positive_rate(),
            drift_detected=slot.drift_unreported,
            promoted=slot.promoted_unreported,
        )
        slot.drift_unreported = slot.promoted_unreported = False
        return metrics

    def _erase(self, member_id: str, partition: int) -> None:
        state = self.states.get(member_id)
        if state is None:
            return
        self.models.population.remove(state.engagement_bin, state.engagement_binned_at)
        del self.states[member_id]
        self._timers[partition].cancel(member_id)

    def _opt_out(
        self, member_id: str, partition: int, at: float, digest: int, marketing: bool
    ) -> None:
        """Analytics consent withdrawn: forget the member (state, pending labels, timers,
        population) and keep only a marker that recognises their later events."""
        state = self.states.get(member_id)
        if state is None or not state.opted_out:
            self._erase(member_id, partition)
            state = MemberState.marker(member_id, at, marketing)
        state.consent_marketing = marketing
        state.remember(digest, self.config.recent_event_ids)
        self.states[member_id] = state
