"""A partition task: the members of one input partition, their clock, timers and checkpoints.

Input topics are co-partitioned by ``member_id``, so partition ``n`` of every
input holds all events of the same members. :class:`PartitionTask` ``n`` owns
them, as a stream task does in Kafka Streams or Quix Streams: their states and
the models it scores them with (a :class:`~scoring.engine.ScoringEngine` of its
own), the event-time order of its inputs (:class:`~streams.ordering.EventTimeOrder`),
its clock and silence timers, its member alert rules, and its checkpoints
(:mod:`streams.checkpoint`). Nothing in it depends on which worker runs it or on
the other tasks, so a task gives the same results whether one worker runs every
task or they are spread over many and move between them. Three of its parts live
beside it: its share of the community alert rules (:mod:`streams.community_link`),
the erasures it still has to carry out (:mod:`streams.erasures`), and the messages
and outbox rows of its scores and alerts (:mod:`streams.task_outputs`).

Life of a task on a worker:

* **restore** (on assignment, before any of its events is applied): read the
  newest commit record, roll back this worker's rows of checkpoints that never
  committed, find the messages those checkpoints produced already, load member
  states, models and alert state (:mod:`streams.checkpoint_store`); start a new
  generation;
* **deliver**: track every message's offset (acknowledged only as a contiguous
  prefix); a message the commit record covers already is a redelivery (the
  group's committed offset lags the checkpoints) and is done at once;
* **hold / release / apply**: valid new events wait for the horizon, are applied
  in event-time order, their outputs produced and buffered in the open checkpoint;
* **checkpoint** (every ``PULSE_CHECKPOINT_SECONDS``, or when asked);
* **revoke** (a rebalance starts): checkpoint what was applied and wait for the
  commit. If the partition stays, the task goes on with what it holds (the
  consumer goes on from its position); if it moves, the task is forgotten at the
  assignment: its held events stay unacknowledged, so the new owner reads them
  from the committed offset, and none of its timers fires here again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from pydantic_core import from_json, to_json

from schemas.envelope import EventBase
from scoring.alerts import AlertEngine, AlertRecord
from scoring.engine import ScoringEngine
from scoring.records import LabelApplied, LifecycleTransition, ModelMetrics, ScoreRecord
from scoring.state import MemberState
from sinks.rows import (
    Tags,
    event_row,
    metrics_row,
    score_row,
    transition_row,
)
from sinks.sealing import Sealer
from streams.checkpoint import Checkpoint, Sealed
from streams.checkpoint_store import Restored, generation, produced_after, roll_back
from streams.commits import CommitRecord, Lineage
from streams.community_link import CommunityLink
from streams.erasures import Erasures
from streams.gc_pause import gc_paused
from streams.offsets import AppliedOffsets, OffsetTracker
from streams.ordering import EventTimeOrder
from streams.retry import retrying
from streams.task_context import Inbound, TaskContext
from streams.task_outputs import emit_alerts, publish_score

__all__ = ["PartitionTask", "TaskContext", "Inbound"]  # the last two from streams.task_context

log = logging.getLogger(__name__)

#: A checkpoint is taken at once when this many members changed since the last one.
CHECKPOINT_MEMBERS = 20_000
#: Messages the broker holds beyond what a task received, at most, for it to be live
#: (checkpoints every PULSE_LIVE_CHECKPOINT_SECONDS instead of PULSE_CHECKPOINT_SECONDS).
LIVE_BACKLOG = 1_000

#: Marks a checkpoint as worth taking once erasures finished (its task record changed).
_ERASURES_DONE = "\x00erasures-done"


class PartitionTask:
    """Partition ``number`` of every input topic, and the members that live there."""

    def __init__(self, number: int, ctx: TaskContext) -> None:
        self.number = number
        self.ctx = ctx
        self.engine = ScoringEngine(ctx.config)
        # member rules here; community periods leave as shares for the aggregators
        self.alerts = AlertEngine(ctx.rules, forward_community=True)
        self.community = CommunityLink(
            number, ctx.rules, ctx.partitions, ctx.community_topic, ctx.outputs
        )
        self._last_event = time.monotonic()
        self.order: EventTimeOrder[Inbound, EventBase] = EventTimeOrder(
            ctx.inputs,
            idle_seconds=ctx.idle_seconds,
            max_held=ctx.max_held,
            highwater=ctx.highwater,
            ends=ctx.ends,
            partitions=[number],
        )
        self.lateness = timedelta(seconds=ctx.config.allowed_lateness_seconds)
        self.topics = (*ctx.inputs, ctx.community_topic)  # every topic whose partition is ours
        self.trackers: dict[str, OffsetTracker[Inbound]] = {t: OffsetTracker() for t in self.topics}
        self.gen = generation(ctx.store.kind)
        self.seq = 0  # the newest checkpoint taken (committed or on its way)
        self.lineage = Lineage.start(self.gen, 0)  # as of the newest checkpoint taken
        self.applied: dict[str, AppliedOffsets] = {t: AppliedOffsets.empty() for t in self.topics}
        self.pending_ids: set[str] = set()  # held, or applied and not stored yet
        self.open = Checkpoint(Tags(number, self.gen, 1))
        self._last_commit: asyncio.Future[None] | None = None
        self._inflight: set[asyncio.Future[None]] = set()
        self.restored = False
        self.alerts_fired = 0
        self.stages: Counter[str] = Counter()
        self.risks: Counter[str] = Counter()
        self._last: dict[str, tuple[str, str]] = {}  # member -> (stage, risk) as last counted
        self.restored_members = 0
        self.rolled_back: dict[str, int] = {}
        self.skipped_outputs = 0
        # members whose erasure request is committed and whose rows are still to go
        self.erasures = Erasures(number, ctx.clickhouse, ctx.database, ctx.erasure_feed)
        self.withheld = 0  # events of members without analytics consent: not stored
        self.opted_out: set[str] = set()  # pseudonyms of members without analytics consent

    # --- restore -----------------------------------------------------------------------
    async def restore(self) -> None:
        """Come back from the newest committed checkpoint (see the module docstring).

        ClickHouse or the broker away holds the restore (and so the partition's
        events), retried with back-off: nothing of the task is applied before it."""
        ctx = self.ctx
        started = time.monotonic()
        restored = await retrying(
            ctx.failing, f"task {self.number}: reading its checkpoint", ctx.store.load, self.number
        )
        commit = restored.commit if restored is not None else None
        self.rolled_back = await retrying(
            ctx.failing,
            f"task {self.number}: rolling back uncommitted rows",
            asyncio.to_thread,
            roll_back,
            ctx.clickhouse,
            ctx.database,
            self.number,
            commit,
            ctx.store.kind,
        )
        same_broker = commit is None or commit.broker == ctx.broker_id
        if commit is not None:
            self.seq = commit.seq
            self.lineage = commit.lineage
            if same_broker:
                self.applied.update(commit.inputs)
                for topic in ctx.inputs:  # its events come from there on, however late
                    if topic in commit.inputs:
                        self.order.starts_at(topic, self.number, commit.inputs[topic].below)
        if ctx.store.kind == "kafka" and same_broker:
            # Scores and alerts of task n go to partition n of their topics, so what this
            # task produced after its last commit (or ever, without one) is there
            starts = dict(commit.outputs) if commit is not None else {}
            for topic in (ctx.scores_topic, ctx.alerts_topic):
                starts.setdefault(f"{topic}:{self.number}", 0)
            skip = await retrying(
                ctx.failing,
                f"task {self.number}: reading its uncommitted outputs",
                asyncio.to_thread,
                produced_after,
                ctx.bootstrap,
                self.number,
                starts,
                ctx.kafka_config,
            )
            ctx.outputs.skip[self.number] = skip
            self.skipped_outputs = len(skip)
        if restored is not None:
            with gc_paused():
                self._load(restored)
        self.open = Checkpoint(Tags(self.number, self.gen, self.seq + 1))
        self.restored = True
        # the aggregators may have lost what this task sent since their last checkpoint
        # (an embedded broker starts empty): send the recent shares and the watermark again
        self.community.resend(self.alerts.watermark, self._quiet(), new_broker=not same_broker)
        if restored is not None:
            log.info(
                "task %d restored %d members at checkpoint %d in %.2fs",
                self.number,
                self.restored_members,
                self.seq,
                time.monotonic() - started,
            )

    def _load(self, restored: Restored) -> None:
        sealer = self.ctx.sealer
        if restored.task_record:  # first: the alert engine's watermark decides open days
            data = from_json(sealer.open(restored.task_record))
            self.engine.restore_models(base64.b64decode(data["models"]))
            self.alerts = AlertEngine.from_dict(
                self.ctx.rules, data["alerts"], forward_community=True
            )
            self.community.load(data)
            self.erasures.load(data)
        opened = restored.open_members(partial(open_member, sealer))
        for state, alerts in opened.values():  # tombstones ("") of erased members: none
            self.engine.load_member(state, self.number)
            if alerts is not _NO_ALERTS:  # records from before carry none: the task record has
                self.alerts.load_member(state.member_id, alerts, fresh=True)
            if state.opted_out:
                self.opted_out.add(self.ctx.pseudonym(state.member_id))
        self.restored_members = len(self.engine.states)
        self.erasures.start(self._erased)

    # --- intake ------------------------------------------------------------------------
    def deliver(self, item: Inbound) -> bool:
        """Track a delivered message; False if it is a redelivery of one already done."""
        tracker = self.trackers[item.topic]
        if not tracker.delivered(item.offset, item):
            return False
        applied = self.applied[item.topic]
        if applied.below == 0 and not applied.beyond and tracker.pending == 1:
            # the first delivery since the task started here: everything before it was
            # committed by the consumer group, by us or an earlier owner
            self.applied[item.topic] = AppliedOffsets(item.offset)
        if self.applied[item.topic].covers(item.offset):
            self._acknowledge([item])
            return False
        return True

    def expected(self, topic: str) -> int | None:
        """The offset this task needs next on ``topic`` (None: any is fine): after the
        newest one delivered, or, before the first delivery, where its commit ends."""
        tracked = self.trackers[topic].next_expected
        if tracked is not None:
            return tracked
        below = self.applied[topic].below
        return below if below > 0 else None

    def finished(self, item: Inbound) -> None:
        """A message that needs no more than a checkpoint (a reject or a duplicate)."""
        self.open.messages.append(item)

    def hold(self, fresh: list[tuple[Inbound, EventBase]], now: float) -> None:
        for _, event in fresh:
            self.pending_ids.add(str(event.event_id))
        self.order.add(fresh, now)

    def seen(self, items: Sequence[Inbound], now: float) -> None:
        self.order.seen(items, now)

    # --- applying ----------------------------------------------------------------------
    def release(self, now: float) -> None:
        """Apply what the horizon releases, then move the clock to the horizon.

        The timers the clock passes fire in the same place of the sequence of
        records however the releases were batched (before the first event later
        than their due time plus the allowed lateness), so a task's outputs depend
        on its events alone."""
        released = self.order.release(now)
        if released:
            self.apply(released)
        horizon = self.order.horizon_time(now)
        if horizon is not None:
            fired = self.engine.advance(self.number, horizon - self.lateness)
            if fired:
                self._emit([(None, r) for r in fired], None)
            if self.order.caught_up(now):
                # nothing more is coming: alert dwells and days may close at the clock
                watermark = self.engine.watermark(self.number)
                if watermark is not None:
                    self._alerts_emit(self.alerts.advance(watermark))
                    self._forward_shares()
                self._daily_scores()
        self._report()

    def _daily_scores(self) -> None:
        """The engine's daily batch, once a day of event time and only when caught up:
        rows for ``member_scores`` alone, the table readers rank members by (a refresh,
        not a new score: no history row, no message, no alert, no member state)."""
        records = self.engine.daily_scores(self.number)
        if not records:
            return
        tags = self.open.tags
        pseudonym = self.ctx.pseudonym
        self.open.add_rows(
            "member_scores",
            [score_row(r, pseudonym=pseudonym, cause=None, tags=tags) for r in records],
        )
        for record in records:
            self._count(record)
        self.ctx.metrics.scores_emitted.labels("daily").inc(len(records))

    def apply(self, items: list[tuple[Inbound, EventBase]]) -> None:
        """Apply events (in event-time order) and buffer what they produce."""
        checkpoint = self.open
        observe = self.ctx.metrics.scoring_duration.observe
        duplicates = self.engine.stats.duplicates
        for item, event in items:
            started = time.perf_counter()
            out = self.engine.process(event, partition=self.number)
            observe(time.perf_counter() - started)
            event_id = str(event.event_id)
            checkpoint.messages.append(item)
            if self.engine.stats.duplicates > duplicates:
                # the member's ring knows the event: applied and stored before
                duplicates = self.engine.stats.duplicates
                self.ctx.metrics.events_duplicate.labels(item.topic).inc()
                self.pending_ids.discard(event_id)
                continue
            event_type = event.event_type  # type: ignore[attr-defined]
            if event_type != "consent_changed" and self.engine.opted_out(event.member_id):
                # analytics consent withdrawn: the behaviour is neither scored nor stored;
                # what its event time fired (other members' timers) is theirs, and stays
                self.pending_ids.discard(event_id)
                self.withheld += 1
                if out:
                    self._emit([(None, r) for r in out], None)
                continue
            if event_type == "erasure_requested":
                checkpoint.erasures.append(self.ctx.pseudonym(event.member_id))
                self.alerts.forget(event.member_id)
            elif event_type == "consent_changed":
                member = self.ctx.pseudonym(event.member_id)
                if self.engine.opted_out(event.member_id):
                    self.opted_out.add(member)
                    checkpoint.retractions[member] = int(event.occurred_at.timestamp() * 1000)
                else:
                    self.opted_out.discard(member)
            checkpoint.members.add(event.member_id)
            checkpoint.add_rows("events", [self._event_row(item, event, checkpoint.tags)])
            checkpoint.event_ids.append(event_id)
            self._freshness(item)
            self._last_event = time.monotonic()
            if out:
                self._emit([(event_id, r) for r in out], event)

    def _event_row(self, item: Inbound, event: EventBase, tags: Tags) -> dict[str, Any]:
        return event_row(
            event,
            topic=item.topic,
            partition=item.partition,
            offset=item.offset,
            pseudonym=self.ctx.pseudonym,
            ingested_at=datetime.now(UTC),
            tags=tags,
        )

    def _freshness(self, item: Inbound) -> None:
        if item.timestamp is not None:
            self.ctx.metrics.freshness.observe(max(0.0, time.time() - item.timestamp))

    def _emit(self, records: list[tuple[str | None, Any]], event: EventBase | None) -> None:
        """Rows and messages of the records one step produced: applying ``event`` (the
        records' cause is its id), or moving the clock (``event`` None)."""
        ctx = self.ctx
        checkpoint = self.open
        tags = checkpoint.tags
        pseudonym = ctx.pseudonym
        m = ctx.metrics
        scores: list[dict[str, Any]] = []
        transitions: list[dict[str, Any]] = []
        model_rows: list[dict[str, Any]] = []
        alerts: list[AlertRecord] = []
        triggers: Counter[str] = Counter()
        for cause, record in records:
            if isinstance(record, ScoreRecord):
                # a re-score fired while applying an event is not that event's score
                own = cause if record.trigger == "event" else None
                row = score_row(record, pseudonym=pseudonym, cause=own, tags=tags)
                scores.append(row)
                alerts.extend(self._alert(record, event if own is not None else None))
                self._count(record)
                self._publish_score(record, row, tags)
                checkpoint.members.add(record.member_id)
                triggers[record.trigger] += 1
            elif isinstance(record, LifecycleTransition):
                transitions.append(transition_row(record, pseudonym=pseudonym, tags=tags))
                checkpoint.members.add(record.member_id)
                m.lifecycle_transitions.labels(record.from_stage, record.to_stage).inc()
            elif isinstance(record, ModelMetrics):
                model_rows.append(metrics_row(record, tags=tags))
                self._model_gauges(record)
            elif isinstance(record, LabelApplied):  # a settled label changes the member
                checkpoint.members.add(record.member_id)
                m.labels_applied.labels(record.model, str(record.label)).inc()
        for trigger, n in triggers.items():
            m.scores_emitted.labels(trigger).inc(n)
        checkpoint.add_rows("member_scores", scores)
        checkpoint.add_rows("score_history", scores)
        checkpoint.add_rows("lifecycle_transitions", transitions)
        checkpoint.add_rows("model_metrics", model_rows)
        self._alerts_emit(alerts)
        self._forward_shares()

    def _count(self, record: ScoreRecord) -> None:
        previous = self._last.get(record.member_id)
        if previous is not None:
            self.stages[previous[0]] -= 1
            self.risks[previous[1]] -= 1
        self._last[record.member_id] = (record.lifecycle_stage, record.churn_risk)
        self.stages[record.lifecycle_stage] += 1
        self.risks[record.churn_risk] += 1

    def _model_gauges(self, record: ModelMetrics) -> None:
        m = self.ctx.metrics
        partition = str(self.number)
        if record.roc_auc is not None:
            m.model_roc_auc.labels(record.model, partition).set(record.roc_auc)
        if record.log_loss is not None:
            m.model_log_loss.labels(record.model, partition).set(record.log_loss)
        if record.drift_detected:
            m.model_drift.labels(record.model, partition).inc()

    def _publish_score(self, record: ScoreRecord, row: dict[str, Any], tags: Tags) -> None:
        if not publish_score(self.ctx, self.number, record, row, tags):
            self.skipped_outputs += 1

    def _alert(self, record: ScoreRecord, event: EventBase | None) -> list[AlertRecord]:
        """Alert rules on one score, in event time: the alert engine's clock moves to the
        score's time first (dwells that ended before it fire, days before it close),
        so alerts depend on the sequence of scores, not on how it was batched."""
        engine = self.alerts
        alerts = engine.advance(record.scored_at)
        alerts.extend(engine.on_score(record))
        if event is not None and event.event_type == "survey_answered":  # type: ignore[attr-defined]
            nps = getattr(getattr(event, "properties", None), "nps", None)
            if event.community_id and nps is not None:
                alerts.extend(engine.on_survey(event.community_id, int(nps), event.occurred_at))
        return alerts

    # --- community periods -----------------------------------------------------------
    def _forward_shares(self) -> None:
        """Send this task's shares of the community periods its alert clock closed."""
        closed = self.alerts.drain_closed()
        if closed:  # called after every batch: most find nothing new
            self.community.forward(closed, self.alerts.watermark, self.open.tags)

    def _quiet(self) -> bool:
        """No event for quiet_seconds and none on its way: the task holds nothing back.

        A task that merely waits for a slow fetch (after a restore, under load) is not
        quiet: the aggregators would close its communities' periods without its share."""
        silent = time.monotonic() - self._last_event
        if silent < self.ctx.quiet_seconds:
            return False
        return not self.order.pending() or silent >= 10 * self.ctx.quiet_seconds

    def _report(self) -> None:
        self.community.report(self.alerts.watermark, self._quiet())

    @property
    def reported(self) -> bool:
        """Whether the aggregators were told this task's current watermark."""
        return self.community.reported(self.alerts.watermark)

    def control(self, items: list[Inbound]) -> None:
        """Messages of this task's partition of the community topic: shares and watermarks
        for the communities it aggregates. Closes what every source has passed."""
        alerts = self.community.receive(items)
        self.open.messages.extend(items)
        self._alerts_emit(alerts)

    def _alerts_emit(self, alerts: list[AlertRecord]) -> None:
        if not alerts:
            return
        marketing = self.engine.marketing_allowed
        self.alerts_fired += emit_alerts(self.ctx, self.open, self.number, alerts, marketing)
        self._export_active()

    def _export_active(self) -> None:
        for (rule, severity), n in self.alerts.active().items():
            self.ctx.metrics.alerts_active.labels(rule, severity).set(n)

    # --- checkpoints -------------------------------------------------------------------
    def due(self, now: float) -> bool:
        checkpoint = self.open
        if checkpoint.empty():
            return False
        if len(checkpoint.members) >= CHECKPOINT_MEMBERS:
            return True
        live = self.ctx.live_checkpoint_seconds
        if live is not None and checkpoint.expired(now, live) and self._live():
            return True  # rows queryable sooner: the batches are small anyway
        return checkpoint.expired(now, self.ctx.checkpoint_seconds)

    def _live(self) -> bool:
        """Live checkpoints are on and the inputs hold at most LIVE_BACKLOG messages more
        than this task received."""
        if self.ctx.live_checkpoint_seconds is None:
            return False
        backlog = self.order.backlog()
        return backlog is not None and backlog <= LIVE_BACKLOG

    async def checkpoint(self) -> None:
        """Commit the open checkpoint (steps in :mod:`streams.checkpoint`); returns once its
        rows are with the sink -- the commit and the acknowledgements follow."""
        checkpoint = self.open
        if checkpoint.empty():
            return
        ctx = self.ctx
        tags = checkpoint.tags
        for message in checkpoint.messages:
            topic_offsets = self.applied.get(message.topic)
            if topic_offsets is not None:
                self.applied[message.topic] = topic_offsets.with_offsets([message.offset])
        self.seq = tags.seq
        self.lineage = self.lineage.committing(self.gen, tags.seq)
        self.erasures.stage(tags.seq, checkpoint.erasures, checkpoint.retractions)
        record = CommitRecord(
            self.number, self.gen, tags.seq, self.lineage, ctx.broker_id, dict(self.applied)
        )
        sealed = self._seal(checkpoint.members)
        received = self.community.aggregator.received()
        self.open = Checkpoint(Tags(self.number, self.gen, tags.seq + 1))
        committed = await checkpoint.commit(
            sealed=sealed,
            record=record,
            outputs=ctx.outputs,
            sink=ctx.sink,
            store=ctx.store,
            remember=self._stored,
            acknowledge=self._acknowledge,
            after=self._last_commit,
        )
        if self._live():
            ctx.sink.hurry()  # a live reader waits for these rows: no batching by age
        if self.erasures.due:
            committed.add_done_callback(self.erasures.after(tags.seq, self._erased))
        committed.add_done_callback(self.community.after_commit(received))
        self._last_commit = committed
        self._inflight.add(committed)
        committed.add_done_callback(self._inflight.discard)

    def _stored(self, event_ids: list[str]) -> None:
        self.ctx.index.remember(event_ids)
        self.pending_ids.difference_update(event_ids)

    def _acknowledge(self, messages: list[Inbound]) -> None:
        m = self.ctx.metrics
        acked: Counter[str] = Counter()
        for message in messages:
            tracker = self.trackers.get(message.topic)
            if tracker is None:
                continue
            for item in tracker.done(message.offset):
                item.ack()
                acked[message.topic] += 1
        for topic, n in acked.items():
            m.acked_messages.labels(topic).inc(n)
        if messages:
            m.last_ack.set(time.time())

    async def committed(self) -> None:
        """Wait until every checkpoint taken so far is committed and acknowledged."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight))

    def _seal(self, members: set[str]) -> Sealed:
        sealer = self.ctx.sealer
        pseudonym = self.ctx.pseudonym
        states = self.engine.states
        alerts = self.alerts
        sealed: dict[str, str] = {}
        # a member's record carries their share of the alert engine, so the task record
        # stays the size of the communities, not of the membership
        for member_id in members | self.engine.drain_touched() | alerts.drain_touched():
            if member_id == _ERASURES_DONE:
                continue
            state = states.get(member_id)
            if state is None:  # erased: a tombstone, so a restore does not bring them back
                sealed[pseudonym(member_id)] = ""
                continue
            record = {**state.to_dict(), "alerts": alerts.member_state(member_id)}
            sealed[pseudonym(member_id)] = sealer.seal(_json(record))
        task_record = {
            "models": base64.b64encode(self.engine.models_checkpoint()).decode(),
            "alerts": alerts.to_dict(members=False),
            **self.community.to_dict(),
            **self.erasures.to_dict(),
        }
        return Sealed(sealed, sealer.seal(_json(task_record)))

    def _erased(self) -> None:
        """Erasures finished: the task record changed, so the next checkpoint is due."""
        self.open.members.add(_ERASURES_DONE)

    # --- leaving -------------------------------------------------------------------------
    async def revoke(self) -> None:
        """The partition leaves this worker: commit what was applied, drop what is held."""
        await self.checkpoint()
        await self.committed()
        await self.erasures.wait()
        m = self.ctx.metrics
        for model in ("churn", "conversion"):  # the new owner reports this partition's models
            for gauge in (m.model_roc_auc, m.model_log_loss):
                gauge.remove(model, str(self.number))

    @property
    def held(self) -> int:
        return self.order.held

    @property
    def flushed(self) -> bool:
        """Nothing buffered, committing, due (the daily batch) or left to erase."""
        return (
            self.open.empty()
            and not self._inflight
            and not self.erasures.due
            and not self.engine.daily_due(self.number)
        )

    @property
    def unacknowledged(self) -> int:
        """Valid events held for event-time order or waiting for their checkpoint."""
        return self.order.held + sum(t.pending for t in self.trackers.values())

    def acked_through(self) -> dict[tuple[str, int], int]:
        return {
            (topic, self.number): tracker.acked_through for topic, tracker in self.trackers.items()
        }

    def status(self) -> dict[str, Any]:
        return {
            "members": len(self.engine.states),
            "seq": self.seq,
            "held": self.order.held,
            "restored_members": self.restored_members,
            "rolled_back_rows": sum(self.rolled_back.values()),
            "skipped_outputs": self.skipped_outputs,
        }


#: What ``open_member`` gives for a record sealed before members carried alert state.
_NO_ALERTS = object()


def open_member(sealer: Sealer, sealed: str) -> tuple[MemberState, Any]:
    """A member's sealed checkpoint record: its state and its share of the alert engine."""
    record = from_json(sealer.open(sealed))
    return MemberState.from_dict(record), record.get("alerts", _NO_ALERTS)


def _json(data: dict[str, Any]) -> bytes:
    """Compact JSON by pydantic-core's encoder, faster than ``json.dumps`` (NaN and
    infinities kept, as ``json.loads`` reads them)."""
    return to_json(data, inf_nan_mode="constants")
