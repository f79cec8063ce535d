"""The Faust application: topics, the ingest agent, and the tasks around it.

One agent reads both input topics (they are co-partitioned, keyed by
``member_id``), so all of a member's events meet in one stream. The agent
takes batches with ``noack_take``: Faust does not acknowledge anything by
itself; the pipeline acknowledges a batch only after its rows are stored in
ClickHouse, and Faust commits the offsets that have been acknowledged.

The scorer's checkpoints also go to a changelog-backed Faust table
(:mod:`streams.state_table`), from which a worker resumes when its ClickHouse
data is not there (a new host, a lost data dir).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
from faust.types import TP, EventT

from streams.config import Settings
from streams.pipeline import Inbound, Pipeline
from streams.state_table import StateTable

__all__ = ["PulseApp", "INPUT_STREAMS", "OUTPUT_TOPICS"]

log = logging.getLogger(__name__)

INPUT_STREAMS = ("interactions", "purchases")
OUTPUT_TOPICS = ("scores", "alerts", "dead-letter")

#: Largest record Pulse produces with Faust's producer (the state table's models record).
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


class PulseApp:
    """The Faust app of one worker, wired to a :class:`Pipeline` built at start-up."""

    def __init__(self, settings: Settings, bootstrap: str, take_max: int = 1000) -> None:
        self.settings = settings
        self.pipeline: Pipeline | None = None
        self.crashed: BaseException | None = None
        self.on_started: list[Callable[[], Any]] = []
        self.app = faust.App(
            settings.app_id,
            broker=f"kafka://{bootstrap}",
            datadir=str(settings.data_path / "faust"),
            store=f"{settings.store}://",
            web_enabled=False,
            topic_partitions=settings.partitions,
            topic_replication_factor=1,
            topic_disable_leader=True,
            broker_rebalance_timeout=settings.rebalance_timeout_seconds,
            # Events held for event-time order are acknowledged later or redelivered after
            # a restart: Faust must not wait for them to stop or rebalance.
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
            # the models record of a checkpoint grows with the community (1.04 MB at
            # 20,000 members, over the 1 MB default); consumers fetch it whatever its size
            producer_max_request_size=MAX_RECORD_BYTES,
            key_serializer="raw",
            value_serializer="raw",
        )
        self.input_topics = [settings.topic(name) for name in INPUT_STREAMS]
        self.source = self.app.topic(*self.input_topics, key_type=bytes, value_type=bytes)
        self.dead_letter = self.app.topic(settings.topic("dead-letter"), internal=False)
        self.state = StateTable(self.app, settings.partitions, MAX_RECORD_BYTES)
        self._highwaters: dict[tuple[str, int], int] = {}
        self._take_max = take_max
        self.app.agent(self.source, name="pulse.ingest")(self._ingest)
        self.app.task(self._run_sink)
        self.app.timer(2.0)(self._report_commits)
        self.app.timer(1.0)(self._tick_clocks)

    async def _ingest(self, stream: Any) -> None:
        async for events in stream.noack_take(self._take_max, within=0.2):
            pipeline = self.pipeline
            if pipeline is None:  # pragma: no cover - set before the worker starts
                raise RuntimeError("PulseApp.pipeline must be set before the worker starts")
            try:
                await pipeline.handle([_inbound(e) for e in events])
            except Exception as exc:
                # A bug, not bad input (bad input is dead-lettered): nothing of this batch
                # is acknowledged, so it is redelivered after a restart. Say so loudly.
                self.crashed = exc
                log.exception("the ingest agent crashed; its batch stays uncommitted")
                raise

    async def _run_sink(self) -> None:
        assert self.pipeline is not None
        await self.pipeline.sink.run()

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

    async def _tick_clocks(self) -> None:
        """Event-time clocks move on when an input falls idle, even if no new batch comes."""
        if self.pipeline is not None:
            await self.pipeline.tick()

    async def _report_commits(self) -> None:
        """Export the committed offsets Faust holds (they move only after rows are stored)."""
        if self.pipeline is None:
            return
        committed = getattr(self.app.consumer, "_committed_offset", {})
        gauge = self.pipeline.metrics.committed_offset
        for tp, offset in list(committed.items()):
            if offset is not None:
                gauge.labels(tp.topic, str(tp.partition)).set(offset)

    async def publish_dead_letter(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Any:
        """Send a rejected message to the dead-letter topic; the result resolves on delivery."""
        return await self.dead_letter.send(key=key, value=value, headers=headers)
