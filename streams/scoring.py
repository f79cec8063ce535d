"""The scoring stage of the pipeline: the pure engine (``scoring/``) wired to I/O.

For each batch of new events: the engine applies them (per partition, in
offset order), fires silence timers as each partition's event-time clock
advances, and returns records. This stage turns them into rows
(``member_scores``, ``score_history``, ``lifecycle_transitions``,
``model_metrics``), messages on ``pulse.scores``, metric samples, and a
checkpoint: the sealed state of every member changed since the last one and the
models, in one insert (``member_state``), at most every ``checkpoint_seconds``.
Events are acknowledged only once the checkpoint covering them is stored.

Event time: the pipeline hands events over in one event-time order across
every input topic-partition of the worker (:mod:`streams.ordering` holds each
one until every input has passed it), so the partitions share one clock
(:data:`CLOCK`) that follows the events; after each batch it moves on to the
horizon, which fires the silence timers that came due. The same input then
gives the same sequence of state updates, timer firings and model updates,
whatever the fetch interleaving and however often the worker restarted.

Durability: every checkpoint goes to ClickHouse (``member_state``, the durable
record in embedded mode, where the broker keeps nothing across restarts) and to
the changelog-backed Faust table ``member-state`` (:mod:`streams.state_table`,
the durable record with a real Kafka cluster). Before the first batch -- once
Faust has recovered the table -- the stage restores every member state and the
models from one consistent checkpoint merged from the two
(:func:`streams.state_table.consistent`); redelivered events that the restored
state already holds are recognised by the state's ring of applied event ids and
change nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, Message, Producer

from schemas.envelope import EventBase
from schemas.errors import PulseError
from scoring.config import ScoringConfig
from scoring.engine import ScoringEngine
from scoring.records import LabelApplied, LifecycleTransition, ModelMetrics, ScoreRecord
from scoring.state import MemberState
from sinks.clickhouse import ClickHouseSink
from sinks.rows import utc
from sinks.sealing import Sealer
from streams.alerting import AlertStage, rules_from_settings
from streams.pipeline import Inbound
from streams.state_table import StateRecord, StateTable, consistent

if TYPE_CHECKING:
    from streams.runtime import Runtime

__all__ = ["StreamScorer", "scorer_factory"]

log = logging.getLogger(__name__)


#: ``member_state`` row holding the models and the alert engine (never a pseudonym:
#: those are hex), written in the same insert as the member states of its batch.
MODELS_ROW = "~models"

#: A checkpoint is written at once when this many members changed since the last one.
CHECKPOINT_MEMBERS = 20_000

#: The engine clock every partition of this worker shares (see the module docstring).
CLOCK = 0


def _version(moment: datetime) -> int:
    """Row version: event time in microseconds (later record wins in ReplacingMergeTree)."""
    return int(moment.timestamp() * 1_000_000)


class StreamScorer:
    """Scores new events and buffers the resulting rows and checkpoints in the sink."""

    def __init__(self, runtime: Runtime, config: ScoringConfig) -> None:
        self.runtime = runtime
        self.engine = ScoringEngine(config)
        self.lateness = timedelta(seconds=config.allowed_lateness_seconds)
        self.metrics = runtime.metrics
        self.pseudonym = runtime.pseudonym
        self.sealer = Sealer.from_key(runtime.pseudonym_key)
        self.database = runtime.settings.clickhouse_database
        self.partition_of: dict[str, int] = {}
        self.stages: Counter[str] = Counter()
        self.risks: Counter[str] = Counter()
        self._last: dict[str, tuple[str, str]] = {}  # member -> (stage, risk) as last exported
        # Scores go out through librdkafka: batched in C, confirmed once per batch.
        self.scores_topic = runtime.settings.topic("scores")
        self.producer = Producer(
            {
                "bootstrap.servers": runtime.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "partitioner": "murmur2_random",
            }
        )
        self._delivery_errors: list[str] = []
        self._lock = asyncio.Lock()
        self.alerts = AlertStage(
            rules_from_settings(runtime.settings.alert_rules),
            metrics=runtime.metrics,
            pseudonym=self.pseudonym,
            sealer=self.sealer,
            publish=self._produce,
            topic=runtime.settings.topic("alerts"),
        )
        self._version = 0  # member_state version of the last checkpoint
        # members changed since the last checkpoint -> their source partition
        self._dirty: dict[str, int] = {}
        self.checkpoint_seconds = runtime.settings.checkpoint_seconds
        self._checkpointed_at = time.monotonic()
        self._reported_hour: datetime | None = None  # models' live quality, see _model_report
        faust_app = getattr(runtime, "faust", None)
        self.table: StateTable | None = getattr(faust_app, "state", None)
        self.restored: dict[str, Any] | None = None  # set by the restore before the first batch

    # --- restore ---------------------------------------------------------------
    def _saved(self) -> tuple[dict[str, StateRecord], int]:
        """One consistent checkpoint from ClickHouse and the state table (see
        :func:`streams.state_table.consistent`), and how many members the table gave."""
        rows = self.runtime.clickhouse.query(
            "SELECT member_id, argMax(source_partition, version), max(version), "
            f"argMax(state, version) FROM {self.database}.member_state GROUP BY member_id"
        ).result_rows
        stored = {row[0]: StateRecord(row[0], int(row[1]), int(row[2]), row[3]) for row in rows}
        if self.table is None:
            return stored, 0
        saved, from_table = consistent(stored, self.table.records(), MODELS_ROW)
        if MODELS_ROW in saved:
            self.table.committed_through = saved[MODELS_ROW].version
        return saved, from_table

    def _restore(self) -> None:
        started = time.monotonic()
        saved, from_table = self._saved()
        models = saved.pop(MODELS_ROW, None)
        for record in saved.values():
            if not record.sealed:  # an erased member
                continue
            state = MemberState.from_dict(json.loads(self.sealer.open(record.sealed)))
            self.engine.load_member(state, CLOCK)
            self.partition_of[state.member_id] = record.partition
        if models is not None:
            checkpoint = json.loads(self.sealer.open(models.sealed))
            self._version = models.version
            self.engine.restore_models(base64.b64decode(checkpoint["models"]))
            self.alerts.restore(checkpoint["alerts"])
        self.restored = {
            "members": len(self.engine.states),
            "models": models is not None,
            "from_changelog": from_table,
        }
        if saved or models is not None:
            log.warning(
                "restored %d member states and %s in %.1fs (%d records newer in the changelog "
                "than in ClickHouse)",
                len(self.engine.states),
                "a model checkpoint" if models is not None else "no model checkpoint",
                time.monotonic() - started,
                from_table,
            )
        self.metrics.members.set(len(self.engine.states))

    async def _ready(self, wait: bool) -> bool:
        """Restore once, before the first event: after Faust recovered the state table."""
        if self.restored is None:
            if self.table is not None and not self.table.recovered:
                if not wait:
                    return False
                await self.table.wait_recovered()
            self._restore()
        return True

    # --- per batch -------------------------------------------------------------
    async def score(
        self,
        items: Sequence[tuple[Inbound, EventBase]],
        sink: ClickHouseSink,
        horizon: datetime | None,
        flush: bool = False,
    ) -> bool:
        """Apply ``items`` (event-time order), then move the clock to ``horizon``.

        Returns True when everything applied so far is covered by a checkpoint in the
        sink (the caller may then store the events and acknowledge them), False while
        the next checkpoint is not due yet. ``flush`` makes it due now.
        """
        async with self._lock:
            # a clock tick before recovery has nothing to do; events wait for it (Faust
            # resumes fetching only after recovery, so they do not in practice)
            if not await self._ready(wait=bool(items)):
                return True
            return await self._score(items, sink, horizon, flush)

    async def _score(
        self,
        items: Sequence[tuple[Inbound, EventBase]],
        sink: ClickHouseSink,
        horizon: datetime | None,
        flush: bool,
    ) -> bool:
        records: list[tuple[Inbound | None, Any]] = []
        touched = self._dirty
        for item, event in items:
            started = time.perf_counter()
            out = self.engine.process(event, partition=CLOCK)
            self.metrics.scoring_duration.observe(time.perf_counter() - started)
            touched[event.member_id] = self.partition_of[event.member_id] = item.partition
            records.extend((item, r) for r in out)
        if horizon is not None:
            records.extend((None, r) for r in self.engine.advance(CLOCK, horizon - self.lateness))
        for _, record in records:
            member = getattr(record, "member_id", None)
            if member:
                touched[member] = self.partition_of.get(member, 0)
        watermark = self.engine.watermark(CLOCK)
        if watermark is not None:
            self.metrics.event_time_watermark.set(watermark.timestamp())
            records.extend((None, r) for r in self._model_report(watermark))
        if records:
            self._emit(records, sink)
            self._alert(records, items, watermark, sink)
        wall = time.monotonic()
        due = flush or wall - self._checkpointed_at >= self.checkpoint_seconds
        if not touched or not (due or len(touched) >= CHECKPOINT_MEMBERS):
            return not touched
        # Scores must be on pulse.scores before the events are acknowledged.
        remaining = await asyncio.to_thread(self.producer.flush, 60)
        if remaining or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors[:3], []
            raise PulseError(f"{remaining} score messages unconfirmed; errors: {errors}")
        saved = self._checkpoint(touched, watermark, sink)
        if self.table is not None and saved:
            await self.table.write(saved[:-1], commit=saved[-1])
        self._dirty = {}
        self._checkpointed_at = wall
        return True

    def _model_report(self, watermark: datetime) -> list[ModelMetrics]:
        """Each model's live quality once per event-time hour (model_metrics rows and the
        pulse_model_* gauges); before, only drift and promotion were reported."""
        hour = watermark.replace(minute=0, second=0, microsecond=0)
        if self._reported_hour is not None and hour <= self._reported_hour:
            return []
        self._reported_hour = hour
        return [m for m in self.engine.model_metrics(hour) if m.labels_seen]

    def _emit(self, records: list[tuple[Inbound | None, Any]], sink: ClickHouseSink) -> None:
        scores: list[dict[str, Any]] = []
        transitions: list[dict[str, Any]] = []
        metrics_rows: list[dict[str, Any]] = []
        wall = time.time()
        for item, record in records:
            if isinstance(record, ScoreRecord):
                row = self._score_row(record)
                scores.append(row)
                self._publish_score(record, row)
                self.metrics.scores_emitted.labels(record.trigger).inc()
                if item is not None and item.timestamp is not None:
                    self.metrics.freshness.observe(max(0.0, wall - item.timestamp))
                self._count(record)
            elif isinstance(record, LifecycleTransition):
                row = record.to_row()
                row.update(
                    member_id=self.pseudonym(record.member_id),
                    at=utc(record.at),
                    community_id=record.community_id or "",
                )
                transitions.append(row)
                self.metrics.lifecycle_transitions.labels(record.from_stage, record.to_stage).inc()
            elif isinstance(record, ModelMetrics):
                metrics_rows.append(self._metrics_row(record))
            elif isinstance(record, LabelApplied):
                self.metrics.labels_applied.labels(record.model, str(record.label)).inc()
        if scores:
            sink.add("member_scores", scores)
            sink.add("score_history", scores)
        if transitions:
            sink.add("lifecycle_transitions", transitions)
        if metrics_rows:
            sink.add("model_metrics", metrics_rows)

    def _score_row(self, record: ScoreRecord) -> dict[str, Any]:
        return {
            "member_id": self.pseudonym(record.member_id),
            "scored_at": utc(record.scored_at),
            "trigger": record.trigger,
            "engagement_score": record.engagement_score,
            "engagement_tier": record.engagement_tier,
            "churn_probability": record.churn_probability,
            "churn_risk": record.churn_risk,
            "churn_model": record.churn_model,
            "conversion_probability": record.conversion_probability,
            "lifecycle_stage": record.lifecycle_stage,
            "top_drivers": [(f, float(c)) for f, c in record.top_drivers],
            "model_version": record.model_version,
            "last_event_at": utc(record.last_event_at),
            "community_id": record.community_id or "",
            "annual_premium": float(record.annual_premium),
            "active_policies": int(record.active_policies),
            "version": _version(record.scored_at),
        }

    def _metrics_row(self, record: ModelMetrics) -> dict[str, Any]:
        row = record.to_row()
        row.update(
            at=utc(record.at),
            drift_detected=int(record.drift_detected),
            promoted=int(record.promoted),
        )
        if record.roc_auc is not None:
            self.metrics.model_roc_auc.labels(record.model).set(record.roc_auc)
        if record.log_loss is not None:
            self.metrics.model_log_loss.labels(record.model).set(record.log_loss)
        if record.drift_detected:
            self.metrics.model_drift.labels(record.model).inc()
        return row

    def _publish_score(self, record: ScoreRecord, row: dict[str, Any]) -> None:
        """``pulse.scores`` keeps the member id (the topic is internal); ClickHouse never does."""
        message = {
            **row,
            "member_id": record.member_id,
            "scored_at": record.scored_at.isoformat(),
            "last_event_at": record.last_event_at.isoformat(),
        }
        message.pop("version")
        value = json.dumps(message, separators=(",", ":")).encode()
        self._produce(self.scores_topic, record.member_id.encode(), value)

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self._delivered)
                return
            except BufferError:  # librdkafka's queue is full: serve delivery reports first
                self.producer.poll(0.05)

    def _alert(
        self,
        records: list[tuple[Inbound | None, Any]],
        items: Sequence[tuple[Inbound, EventBase]],
        watermark: datetime | None,
        sink: ClickHouseSink,
    ) -> None:
        scores = [r for _, r in records if isinstance(r, ScoreRecord)]
        surveys = [
            (event.community_id, int(event.properties.nps), event.occurred_at)  # type: ignore[attr-defined]
            for _, event in items
            if event.event_type == "survey_answered"  # type: ignore[attr-defined]
            and event.community_id
            and event.properties.nps is not None  # type: ignore[attr-defined]
        ]
        alerts = self.alerts.observe(scores, surveys, watermark)
        self.alerts.emit(alerts, sink)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivery_errors.append(str(error))

    def _count(self, record: ScoreRecord) -> None:
        previous = self._last.get(record.member_id)
        if previous is not None:
            self.stages[previous[0]] -= 1
            self.risks[previous[1]] -= 1
        self._last[record.member_id] = (record.lifecycle_stage, record.churn_risk)
        self.stages[record.lifecycle_stage] += 1
        self.risks[record.churn_risk] += 1

    def _checkpoint(
        self, touched: dict[str, int], at: datetime | None, sink: ClickHouseSink
    ) -> list[StateRecord]:
        """Sealed states of the members this batch touched, and the models, in the same batch.

        The models ride in the same table as the states (row :data:`MODELS_ROW`), so one
        insert stores them together and a restore finds them consistent. Returns the
        records for the state table (models last).
        """
        version = self._version = max(self._version + 1, time.time_ns() // 1000)
        records: list[StateRecord] = []
        for member_id, partition in touched.items():
            state = self.engine.states.get(member_id)
            # an erased member leaves a tombstone, so a restore does not bring them back
            sealed = (
                ""
                if state is None
                else self.sealer.seal(json.dumps(state.to_dict(), separators=(",", ":")).encode())
            )
            records.append(StateRecord(self.pseudonym(member_id), partition, version, sealed))
        if records:  # every checkpoint ends with the models: the commit record of the table
            models = {
                "at": at.isoformat() if at is not None else None,
                "saved_at": datetime.now(UTC).isoformat(),
                "models": base64.b64encode(self.engine.models_checkpoint()).decode(),
                "alerts": self.alerts.checkpoint(),
            }
            payload = json.dumps(models, separators=(",", ":")).encode()
            records.append(StateRecord(MODELS_ROW, 0, version, self.sealer.seal(payload)))
            sink.add(
                "member_state",
                [
                    {
                        "member_id": r.key,
                        "source_partition": r.partition,
                        "version": r.version,
                        "state": r.sealed,
                    }
                    for r in records
                ],
            )
        self.metrics.members.set(len(self.engine.states))
        for stage, n in self.stages.items():
            self.metrics.members_by_stage.labels(stage).set(n)
        for risk, n in self.risks.items():
            self.metrics.members_by_churn_risk.labels(risk).set(n)
        return records

    def close(self) -> None:
        """Flush score and alert messages, stop the webhook thread."""
        self.producer.flush(30)
        self.alerts.stop()

    # --- what the CLI shows ----------------------------------------------------
    def status(self) -> dict[str, Any]:
        restored = self.restored or {}
        return {
            "members": len(self.engine.states),
            "at_risk": self.risks.get("high", 0),
            "alerts_fired": self.alerts.fired,
            "restored_members": restored.get("members", 0),
            "restored_models": restored.get("models", False),
            "restored_from_changelog": restored.get("from_changelog", 0),
            "state_table_records_written": self.table.written if self.table else 0,
        }


def scorer_factory(runtime: Runtime) -> StreamScorer:
    settings = runtime.settings
    config = ScoringConfig(
        churn_window_days=settings.churn_window_days,
        conversion_window_days=settings.conversion_window_days,
    )
    return StreamScorer(runtime, config)
