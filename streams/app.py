"""The Faust application: topics, the ingest agent, rebalance hooks and timers.

One agent reads both input topics (they are co-partitioned, keyed by
``member_id``), so all of a member's events meet in one stream. The agent takes
batches with ``noack_take``: Faust acknowledges nothing by itself; a partition
task acknowledges a message once the checkpoint covering it committed
(:mod:`streams.checkpoint`), in offset order, and Faust commits those offsets.

Faust's rebalance signals drive the partition tasks: ``on_partitions_revoked``
makes every task commit what it applied (:meth:`Pipeline.revoke`),
``on_partitions_assigned`` forgets the tasks that moved away, and
``on_rebalance_complete`` (the state table recovered) lets the new ones restore.

With Kafka as the record of task state (``PULSE_STATE_STORE=kafka``) checkpoints
also go to a changelog-backed Faust table (:mod:`streams.state_table`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
from faust.sensors import Monitor
from faust.sensors.monitor import TPOffsetMapping
from faust.tables import TableManager
from faust.types import TP, EventT
from prometheus_client import Gauge

from streams.config import Settings
from streams.consumer import PulseConsumer, PulseTransport, Rewinder
from streams.end_offsets import EndOffsets
from streams.kafka_config import faust_credentials, librdkafka_config
from streams.pipeline import Inbound, Pipeline
from streams.state_table import StateTable

__all__ = [
    "PulseApp",
    "PulseTableManager",
    "INPUT_STREAMS",
    "OUTPUT_TOPICS",
    "COMMUNITY_TOPIC",
    "MAX_RECORD_BYTES",
]

log = logging.getLogger(__name__)

INPUT_STREAMS = ("interactions", "purchases")
OUTPUT_TOPICS = ("scores", "alerts", "dead-letter")
#: Shares of community periods between partition tasks (co-partitioned with the inputs).
COMMUNITY_TOPIC = "community"

#: Longest the agent waits for a batch to fill before it handles what it has. Faust waits
#: this long again after every batch (not from the first message buffered), so on a live
#: stream each message waits up to the handling of the batch before plus this.
TAKE_WINDOW_SECONDS = 0.1

#: Largest record Pulse produces to the changelog (a task record holds its models).
MAX_RECORD_BYTES = 64 << 20


def _inbound(event: EventT) -> Inbound:
    message = event.message
    value = event.value if isinstance(event.value, bytes | bytearray) else message.value
    return Inbound(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=bytes(value or b""),
        timestamp=message.timestamp,
        ack=lambda: None if event.ack() else None,
    )


def _commit_monitor(gauge: Gauge) -> type[Monitor]:
    """Faust's monitor class, also setting ``gauge`` (topic, partition) to each offset
    Faust commits (the offsets acknowledged after their checkpoint committed)."""

    class CommitMonitor(Monitor):
        def on_tp_commit(self, tp_offsets: TPOffsetMapping) -> None:
            super().on_tp_commit(tp_offsets)
            for tp, offset in tp_offsets.items():
                gauge.labels(tp.topic, str(tp.partition)).set(offset)

    return CommitMonitor


class PulseTableManager(TableManager):
    """Faust's table manager without its pause at start.

    Faust's ``TableManager.on_start`` sleeps a second so that tables declared after
    the app starts still join the first recovery. Pulse declares its one table (the
    Kafka record of task state) when :class:`PulseApp` is built, before the worker
    starts, so the pause only delays every start (and every restore) by a second."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class PulseApp:
    """The Faust app of one worker, wired to a :class:`Pipeline` built at start-up."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        take_max: int = 1000,
        committed_offset: Gauge | None = None,
    ) -> None:
        self.settings = settings
        monitor: dict[str, Any] = (
            {} if committed_offset is None else {"Monitor": _commit_monitor(committed_offset)}
        )
        self.pipeline: Pipeline | None = None
        self.crashed: BaseException | None = None
        self.app = faust.App(
            settings.app_id,
            broker=f"kafka://{bootstrap}",
            datadir=str(settings.data_path / "faust"),
            store=f"{settings.store}://",
            web_enabled=False,
            topic_partitions=settings.partitions,
            topic_replication_factor=settings.replication_factor,
            broker_credentials=faust_credentials(settings),
            topic_disable_leader=True,
            broker_rebalance_timeout=settings.rebalance_timeout_seconds,
            # Held events are acknowledged later or redelivered to the next owner:
            # Faust must not wait for them to stop or rebalance.
            stream_wait_empty=False,
            broker_session_timeout=max(6.0, settings.rebalance_timeout_seconds),
            broker_heartbeat_interval=1.0,
            broker_commit_interval=0.5,
            broker_commit_every=1000,
            consumer_auto_offset_reset="earliest",
            producer_acks=-1,
            # checkpoints send thousands of state records at once: batch them (a few
            # ms of linger, batches up to 1 MiB) instead of one produce request each
            producer_linger=0.005,
            producer_max_batch_size=1 << 20,
            # a task record holds its models; consumers fetch it whatever its size
            producer_max_request_size=MAX_RECORD_BYTES,
            key_serializer="raw",
            value_serializer="raw",
            TableManager=PulseTableManager,
            **monitor,
        )
        # before any topic is declared (declaring one creates the transport): Faust's
        # consumer, adapted so a commit never passes an undelivered message
        self.app.transport = PulseTransport(self.app.conf.broker_consumer, self.app)
        self.rewinder = Rewinder(lambda: self.app.consumer)
        self.input_topics = [settings.topic(name) for name in INPUT_STREAMS]
        # one agent over the inputs and the community topic: Faust assigns partition n of
        # all three to the same worker, where partition task n owns them
        self.source = self.app.topic(
            *self.input_topics, settings.topic(COMMUNITY_TOPIC), key_type=bytes, value_type=bytes
        )
        self.state: StateTable | None = None
        if settings.state_store_kind == "kafka":
            self.state = StateTable(self.app, settings.partitions, MAX_RECORD_BYTES)
        self._highwaters: dict[tuple[str, int], int] = {}
        # end offsets asked of the broker, so a caught-up input is confirmed as such
        self.ends = EndOffsets(bootstrap, config=librdkafka_config(settings))
        self._take_max = take_max
        self._recovered = True
        self.rebalances = 0
        self._ticking: asyncio.Future[None] | None = None
        self.app.agent(self.source, name="pulse.ingest")(self._ingest)
        self.app.task(self._run_sink)
        self.app.timer(1.0)(self._tick)
        # Faust calls them as (app, partitions, signal=..., **kwargs)
        self.app.on_partitions_revoked.connect(cast(Any, self._on_revoked))
        self.app.on_partitions_assigned.connect(cast(Any, self._on_assigned))
        self.app.on_rebalance_complete.connect(cast(Any, self._on_recovered))

    # --- agent and timers ------------------------------------------------------------
    async def _ingest(self, stream: Any) -> None:
        async for events in stream.noack_take(self._take_max, within=TAKE_WINDOW_SECONDS):
            pipeline = self._pipeline()
            try:
                await pipeline.handle([_inbound(e) for e in events])
            except Exception as exc:
                # A bug, not bad input (bad input is dead-lettered): nothing of this batch
                # is acknowledged, so it is redelivered after a restart. Say so loudly.
                self.crashed = exc
                log.exception("the ingest agent crashed; its batch stays uncommitted")
                raise

    def _pipeline(self) -> Pipeline:
        if self.pipeline is None:  # pragma: no cover - set before the worker starts
            raise RuntimeError("PulseApp.pipeline must be set before the worker starts")
        return self.pipeline

    async def _run_sink(self) -> None:
        await self._pipeline().sink.run()

    async def _tick(self) -> None:
        """Horizons move on when an input falls idle, even if no new batch comes.

        The pipeline's tick runs as a task of its own (one at a time): it waits for the
        batch in progress, and a timer that waited with it would count the batch's
        seconds as its own -- Faust logs a warning for every tick that outlasts its
        interval, dozens in a large backfill."""
        if self._ticking is None or self._ticking.done():
            self._ticking = self.app.add_future(self._run_tick())

    async def _run_tick(self) -> None:
        try:
            await self._pipeline().tick()
        except Exception as exc:  # the app crashes, as with a failing timer
            self.crashed = exc
            log.exception("the pipeline's tick crashed")
            raise

    # --- rebalances ------------------------------------------------------------------
    async def _on_revoked(self, app: Any, revoked: set[TP], **_: Any) -> None:
        self._recovered = False
        self.rebalances += 1
        try:
            await self._pipeline().revoke()
        except Exception as exc:
            self.crashed = exc
            log.exception("committing the revoked tasks failed")
            raise

    async def _on_assigned(self, app: Any, assigned: set[TP], **_: Any) -> None:
        inputs = set(self.input_topics)
        partitions = {tp.partition for tp in assigned if tp.topic in inputs}
        log.info("assigned input partitions %s", sorted(partitions))
        # a partition new to this worker (or back after another owner moved it on): the
        # high watermark cached from before is stale; its first fetch reports the real one
        fresh = partitions - set(self._pipeline().tasks)
        for key in [k for k in self._highwaters if k[1] in fresh]:
            del self._highwaters[key]
        self.ends.watch((topic, p) for topic in self.input_topics for p in partitions)
        consumer = self.app.consumer
        if isinstance(consumer, PulseConsumer):  # commits follow the tasks' trackers
            consumer.acknowledged = self._acknowledged
        await self._pipeline().assign(partitions, lambda: self._recovered)

    def _acknowledged(self, tp: TP) -> tuple[int, int] | None:
        pipeline = self.pipeline
        return None if pipeline is None else pipeline.acknowledged(tp.topic, tp.partition)

    async def _on_recovered(self, app: Any, **_: Any) -> None:
        self._recovered = True

    def consumer_running(self) -> bool:
        """Whether Faust's consumer runs (started, not stopping, not crashed)."""
        consumer = self.app.consumer
        return bool(consumer.state == "running" and not consumer.should_stop)

    def end_offset(self, topic: str, partition: int) -> tuple[int, float] | None:
        """The input's end offset as the broker last told it, and when it was asked."""
        return self.ends.latest(topic, partition)

    def highwater(self, topic: str, partition: int) -> int | None:
        """The high watermark of an input from the consumer's latest fetch (None: unknown).

        While a partition is briefly unassigned (a rebalance, the state table's
        recovery) the last one known stands: a partition that was behind stays behind,
        rather than falling back to wall-clock idleness and letting the horizon jump.
        """
        try:
            high = self.app.consumer.highwater(TP(topic, partition))
        except Exception:  # not assigned (any more), consumer not started
            high = None
        if high is not None:
            self._highwaters[(topic, partition)] = int(high)
        return self._highwaters.get((topic, partition))
