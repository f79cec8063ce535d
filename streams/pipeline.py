"""What happens to a batch of input messages, independent of Faust.

For each batch: validate every message; send rejects to the dead-letter topic
(waiting for the broker's confirmation); drop events whose ``event_id`` is
already stored; hand new events to the scorer; buffer every resulting row in
the sink; and register one acknowledgement that fires only once all those rows
are in ClickHouse. The Faust agent (:mod:`streams.app`) adapts its events to
:class:`Inbound` and calls :meth:`Pipeline.handle`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from schemas.envelope import EventBase
from schemas.errors import EventRejected
from schemas.registry import StreamName, decode_event
from sinks.clickhouse import ClickHouseSink, EventIdIndex
from sinks.privacy import Pseudonymizer
from sinks.rows import event_row, failed_row
from streams.metrics import PulseMetrics

__all__ = ["Inbound", "Pipeline", "Scorer", "DeadLetterPublisher"]

log = logging.getLogger(__name__)

#: Sends (key, value, headers) to the dead-letter topic; returns an awaitable that
#: resolves once the broker confirmed the write.
DeadLetterPublisher = Callable[
    [bytes | None, bytes, list[tuple[str, bytes]]], Awaitable[Awaitable[Any]]
]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One consumed message, as the pipeline needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: float | None  # broker timestamp, seconds since the epoch
    ack: Callable[[], None]


class Scorer(Protocol):
    """Turns new, valid events into rows for further tables (see :mod:`streams.scoring`)."""

    def score(
        self, items: Sequence[tuple[Inbound, EventBase]], sink: ClickHouseSink
    ) -> Awaitable[None]: ...


class Pipeline:
    """Validation, dead-lettering, de-duplication, scoring and sinking of input batches."""

    def __init__(
        self,
        *,
        sink: ClickHouseSink,
        index: EventIdIndex,
        pseudonym: Pseudonymizer,
        metrics: PulseMetrics,
        dead_letter: DeadLetterPublisher,
        streams: dict[str, StreamName],
        max_event_bytes: int,
        max_future_skew: timedelta,
        scorer: Scorer | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sink = sink
        self.index = index
        self.pseudonym = pseudonym
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.streams = streams  # topic name -> which stream it carries
        self.max_event_bytes = max_event_bytes
        self.max_future_skew = max_future_skew
        self.scorer = scorer
        self.clock = clock
        # (topic, partition) -> highest offset whose rows are stored and acked
        self.acked: dict[tuple[str, int], int] = {}
        self.processed = 0
        self.rejected = 0
        self.duplicates = 0

    async def handle(self, batch: Sequence[Inbound]) -> None:
        """Process one batch; its acknowledgement fires once its rows are stored."""
        now = self.clock()
        m = self.metrics
        valid: list[tuple[Inbound, EventBase]] = []
        failed_rows: list[dict[str, Any]] = []
        deliveries: list[Awaitable[Any]] = []
        for item in batch:
            m.events_received.labels(item.topic).inc()
            try:
                event = decode_event(
                    item.value,
                    key=item.key,
                    stream=self.streams[item.topic],
                    now=now,
                    max_bytes=self.max_event_bytes,
                    max_future_skew=self.max_future_skew,
                )
            except EventRejected as exc:
                self.rejected += 1
                m.events_rejected.labels(item.topic, exc.reason).inc()
                m.dead_letter_published.labels(exc.reason).inc()
                deliveries.append(await self.dead_letter(item.key, item.value, _headers(item, exc)))
                failed_rows.append(
                    failed_row(
                        item.value,
                        key=item.key,
                        topic=item.topic,
                        partition=item.partition,
                        offset=item.offset,
                        reason=exc.reason,
                        error_class=type(exc).__name__,
                        detail=exc.detail,
                        pseudonym=self.pseudonym,
                        failed_at=now,
                    )
                )
                continue
            m.events_valid.labels(item.topic, event.event_type).inc()  # type: ignore[attr-defined]
            valid.append((item, event))

        fresh = await self._drop_duplicates(valid)
        if fresh:
            self.sink.add(
                "events",
                [
                    event_row(
                        event,
                        topic=item.topic,
                        partition=item.partition,
                        offset=item.offset,
                        pseudonym=self.pseudonym,
                        ingested_at=now,
                    )
                    for item, event in fresh
                ],
            )
            if self.scorer is not None:
                await self.scorer.score(fresh, self.sink)
        if failed_rows:
            self.sink.add("failed_events", failed_rows)
        for delivery in deliveries:  # the dead-letter copy must exist before the ack
            await delivery
        self.processed += len(batch)
        self._track_lag(batch)
        self.sink.add_ack(self._acknowledger(batch))
        await self.sink.wait_capacity()

    async def _drop_duplicates(
        self, valid: list[tuple[Inbound, EventBase]]
    ) -> list[tuple[Inbound, EventBase]]:
        if not valid:
            return []
        ids = [str(event.event_id) for _, event in valid]
        seen = await self.index.seen(ids)
        fresh: list[tuple[Inbound, EventBase]] = []
        batch_ids: set[str] = set()
        for (item, event), event_id in zip(valid, ids, strict=True):
            if event_id in seen or event_id in batch_ids:
                self.duplicates += 1
                self.metrics.events_duplicate.labels(item.topic).inc()
                continue
            batch_ids.add(event_id)
            fresh.append((item, event))
        self.index.remember(batch_ids)
        return fresh

    def _acknowledger(self, batch: Sequence[Inbound]) -> Callable[[], None]:
        items = list(batch)

        def ack() -> None:
            for item in items:
                item.ack()
                tp = (item.topic, item.partition)
                if item.offset > self.acked.get(tp, -1):
                    self.acked[tp] = item.offset
                self.metrics.acked_messages.labels(item.topic).inc()
            self.metrics.last_ack.set(time.time())

        return ack

    def _track_lag(self, batch: Sequence[Inbound]) -> None:
        wall = time.time()
        latest: dict[tuple[str, int], float] = {}
        for item in batch:
            if item.timestamp is not None:
                latest[(item.topic, item.partition)] = item.timestamp
        for (topic, partition), ts in latest.items():
            self.metrics.consumer_lag_seconds.labels(topic, str(partition)).set(max(0.0, wall - ts))


def _headers(item: Inbound, exc: EventRejected) -> list[tuple[str, bytes]]:
    return [
        ("pulse.source.topic", item.topic.encode()),
        ("pulse.source.partition", str(item.partition).encode()),
        ("pulse.source.offset", str(item.offset).encode()),
        ("pulse.error.class", type(exc).__name__.encode()),
        ("pulse.error.reason", exc.reason.encode()),
        ("pulse.error.detail", exc.detail.encode()[:1000]),
    ]
