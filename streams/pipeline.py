"""What happens to a batch of input messages, independent of Faust.

For each batch: validate every message; send rejects to the dead-letter topic
(waiting for the broker's confirmation); drop events whose ``event_id`` is
already stored; with a scorer, hold new events until every input has
passed their event time (:mod:`streams.ordering`) and hand the released
ones to the scorer in event-time order; buffer every resulting row in the sink;
and register acknowledgements that fire only once those rows are in
ClickHouse. A held event is acknowledged when it is released and stored, so a
crash redelivers it. The Faust agent (:mod:`streams.app`) adapts its events to
:class:`Inbound` and calls :meth:`Pipeline.handle`, and :meth:`Pipeline.tick`
every second so that horizons move when input stops.
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
from schemas.registry import DEFAULT_MIN_EVENT_TIME, StreamName, decode_event
from sinks.clickhouse import ClickHouseSink, EventIdIndex
from sinks.privacy import Pseudonymizer
from sinks.rows import event_row, failed_row
from streams.dead_letter import dead_letter_record
from streams.metrics import PulseMetrics
from streams.ordering import EventTimeOrder, HighWater

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
    """Turns new, valid events into rows for further tables (see :mod:`streams.scoring`).

    ``items`` come in event-time order; ``horizon`` is the event time up to which
    every event is in (the scorer's clock may move there), None while unknown. The
    result says whether a checkpoint now covers every event applied so far.
    """

    def score(
        self,
        items: Sequence[tuple[Inbound, EventBase]],
        sink: ClickHouseSink,
        horizon: datetime | None,
        flush: bool = False,
    ) -> Awaitable[bool]: ...


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
        idle_seconds: float = 5.0,
        max_held: int = 200_000,
        highwater: HighWater | None = None,
        partitions: int = 0,
        min_event_time: datetime = DEFAULT_MIN_EVENT_TIME,
        dead_letter_max_bytes: int = 1_000_000,
    ) -> None:
        self.sink = sink
        self.index = index
        self.pseudonym = pseudonym
        self.metrics = metrics
        self.dead_letter = dead_letter
        self.streams = streams  # topic name -> which stream it carries
        self.max_event_bytes = max_event_bytes
        self.max_future_skew = max_future_skew
        self.min_event_time = min_event_time
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.scorer = scorer
        self.clock = clock
        self.order: EventTimeOrder[Inbound, EventBase] = EventTimeOrder(
            streams,
            idle_seconds=idle_seconds,
            max_held=max_held,
            highwater=highwater,
            partitions=range(partitions),
        )
        # (topic, partition) -> delivered offsets not acknowledged yet, newest delivered
        self._outstanding: dict[tuple[str, int], set[int]] = {}
        self._newest: dict[tuple[str, int], int] = {}
        self._busy = False
        self._applied: list[tuple[Inbound, EventBase]] = []  # applied, not checkpointed yet
        self.processed = 0
        self.rejected = 0
        self.duplicates = 0

    @property
    def acked(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> highest offset up to which every message is stored and acked."""
        return {
            tp: (min(waiting) - 1 if (waiting := self._outstanding.get(tp)) else newest)
            for tp, newest in self._newest.items()
        }

    @property
    def unacknowledged(self) -> int:
        """Valid events not acknowledged yet: held for event-time order or not checkpointed."""
        return self.order.held + len(self._applied)

    async def handle(self, batch: Sequence[Inbound]) -> None:
        """Process one batch; each message is acknowledged once its rows are stored."""
        self._busy = True
        try:
            await self._handle(batch)
        finally:
            self._busy = False

    async def tick(self) -> None:
        """Release held events whose horizon moved because input stopped (a 1 s timer).

        Skipped while a batch is in progress: a batch blocked on back-pressure would
        otherwise make every input look idle.
        """
        if self.scorer is None or self._busy:
            return
        self._busy = True
        try:
            await self._release([], flush=True)
        finally:
            self._busy = False

    async def finish(self) -> None:
        """Before a stop: apply what the horizon allows and checkpoint it, so it is acked.

        Events still held (an input behind them) stay unacknowledged: Faust does not
        wait for them (``stream_wait_empty`` is off) and they are redelivered next start.
        """
        if self.scorer is not None:
            await self._release([], flush=True)

    async def _handle(self, batch: Sequence[Inbound]) -> None:
        now = self.clock()
        self.order.seen(batch, time.monotonic())
        for item in batch:
            tp = (item.topic, item.partition)
            self._outstanding.setdefault(tp, set()).add(item.offset)
            if item.offset > self._newest.get(tp, -1):
                self._newest[tp] = item.offset
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
                    min_event_time=self.min_event_time,
                    require_key=True,
                )
            except EventRejected as exc:
                self.rejected += 1
                m.events_rejected.labels(item.topic, exc.reason).inc()
                m.dead_letter_published.labels(exc.reason).inc()
                key, value, headers = dead_letter_record(
                    item.key,
                    item.value,
                    item.topic,
                    item.partition,
                    item.offset,
                    exc,
                    self.dead_letter_max_bytes,
                )
                deliveries.append(await self.dead_letter(key, value, headers))
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
        if failed_rows:
            self.sink.add("failed_events", failed_rows)
        for delivery in deliveries:  # the dead-letter copy must exist before the ack
            await delivery
        self.processed += len(batch)
        self._track_lag(batch)
        if self.scorer is None:
            self._store(fresh)
            self.sink.add_ack(self._acknowledger(batch))
        else:
            # rejects and duplicates now; fresh events once applied and checkpointed
            fresh_ids = {id(item) for item, _ in fresh}
            self.sink.add_ack(self._acknowledger([i for i in batch if id(i) not in fresh_ids]))
            await self._release(fresh)
        await self.sink.wait_capacity()

    async def _release(self, fresh: list[tuple[Inbound, EventBase]], flush: bool = False) -> None:
        """Hold ``fresh``; score what the horizon releases; store and ack it once checkpointed.

        The ``events`` rows (the de-duplication record) and the acknowledgements of
        applied events are added only after the scorer's checkpoint that covers them,
        so a crash can never leave an event recorded as seen but missing from the state.
        """
        wall = time.monotonic()
        self.order.add(fresh, wall)
        released = self.order.release(wall)
        self._applied.extend(released)
        assert self.scorer is not None
        horizon = self.order.horizon_time(wall)
        covered = await self.scorer.score(released, self.sink, horizon, flush)
        if covered and self._applied:
            applied, self._applied = self._applied, []
            self._store(applied)
            self.sink.add_ack(self._acknowledger([item for item, _ in applied]))
        self.metrics.events_held.set(self.unacknowledged)

    def _store(self, events: list[tuple[Inbound, EventBase]]) -> None:
        if not events:
            return
        now = self.clock()
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
                for item, event in events
            ],
        )

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
                waiting = self._outstanding.get((item.topic, item.partition))
                if waiting is not None:
                    waiting.discard(item.offset)
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
