"""Intake: what happens to a batch of input messages before and around the partition tasks.

For each batch, per input partition: the message goes to the partition's task
(:mod:`streams.task`), restored first if it just arrived on this worker;
redeliveries of messages the task's checkpoints cover already are done at once;
each message is validated -- a reject goes to the dead-letter topic and
``failed_events`` with its typed reason, a valid event whose ``event_id`` is
stored or on its way already is a duplicate, a new one is held for event-time
order -- and the task applies what its horizon releases and checkpoints when due.
Every message, whatever became of it, is acknowledged only by its task's
checkpoint (:mod:`streams.checkpoint`).

One lock serialises everything that touches tasks: batches, the 1 s tick that
moves horizons when input stops, the final checkpoint before a stop, and the
rebalance callbacks. So a tick never checkpoints events a batch is still
applying, and a revocation never races an apply.

The Faust agent (:mod:`streams.app`) adapts its events to :class:`Inbound` and
calls :meth:`Pipeline.handle`, :meth:`Pipeline.tick`, :meth:`Pipeline.revoke` and
:meth:`Pipeline.assign`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.envelope import EventBase
from schemas.errors import EventRejected
from schemas.registry import DEFAULT_MIN_EVENT_TIME, StreamName, decode_event
from scoring.errors import UnknownMember
from sinks.rows import failed_row
from streams.dead_letter import dead_letter_record
from streams.task import Inbound, PartitionTask, TaskContext

__all__ = ["Inbound", "Pipeline", "MAX_REWINDS"]

log = logging.getLogger(__name__)

#: Rewinds to one missing offset before its messages are taken as lost (gone from the
#: broker). A rewind races the batches fetched before it, so one hole may take a few.
MAX_REWINDS = 100


class Pipeline:
    """Validation, dead-lettering, de-duplication and routing to partition tasks."""

    def __init__(
        self,
        ctx: TaskContext,
        *,
        streams: dict[str, StreamName],
        dead_letter_topic: str,
        max_event_bytes: int,
        max_future_skew: timedelta,
        min_event_time: datetime = DEFAULT_MIN_EVENT_TIME,
        dead_letter_max_bytes: int = 1_000_000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rewind: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.sink = ctx.sink
        self.metrics = ctx.metrics
        self.streams = streams  # topic name -> which stream it carries
        self.dead_letter_topic = dead_letter_topic
        self.max_event_bytes = max_event_bytes
        self.max_future_skew = max_future_skew
        self.min_event_time = min_event_time
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.clock = clock
        self.rewinder = rewind  # (topic, partition, offset): fetch from there again
        self._rewinds: dict[tuple[str, int], tuple[int, int]] = {}  # -> (offset, rewinds)
        self.lock = asyncio.Lock()
        self.tasks: dict[int, PartitionTask] = {}
        self.assigned: set[int] | None = None  # None: every partition (before an assignment)
        self.ready: Callable[[], bool] = lambda: True  # state recovered for the assignment
        self.processed = 0
        self.rejected = 0
        self.duplicates = 0
        self.skipped = 0  # redeliveries of messages a checkpoint covered already
        self.rewinds = 0  # partitions rewound to an offset the consumer skipped
        self.holes = 0  # offsets never delivered, even after rewinds (see _in_order)
        self.closing = False  # the final checkpoint is taken: nothing is applied any more

    # --- what the agent calls ------------------------------------------------------------
    async def handle(self, batch: Sequence[Inbound]) -> None:
        """Process one batch; each message is acknowledged once its checkpoint commits."""
        async with self.lock:
            if self.closing:  # a stop is under way: the next owner reads these again
                return
            await self._handle(batch)
        await self.sink.wait_capacity()

    async def tick(self) -> None:
        """Move horizons when input stops, and checkpoint what is due (a 1 s timer)."""
        async with self.lock:
            if self.closing:
                return
            wall = time.monotonic()
            if self.ready() and self.assigned:
                # every assigned task exists, inputs or not: each one tells the community
                # aggregators how far it is (one with no members at all, that it is quiet)
                for number in sorted(self.assigned):
                    await self._task(number)
            for task in list(self.tasks.values()):
                task.release(wall)
                if task.due(wall):
                    await task.checkpoint()
            self._gauges()

    async def finish(self) -> None:
        """Before a stop: apply what the horizons allow, and commit it.

        Events still held (an input behind them) stay unacknowledged and are
        redelivered next start. This is the last checkpoint: batches and ticks that
        come while the worker stops apply nothing, so no checkpoint starts that the
        stop could cut short (its rows stored, its commit never made: rows that only
        a restart on this data dir would roll back).
        """
        async with self.lock:
            self.closing = True
            wall = time.monotonic()
            for task in self.tasks.values():
                task.release(wall)
                await task.checkpoint()
            for task in self.tasks.values():
                await task.committed()

    async def revoke(self) -> None:
        """Partitions are being taken away (in Kafka's eager protocol: all of them).

        Every task commits what it applied and keeps what it holds: a partition that
        stays here goes on from where the consumer was (Faust keeps a kept partition's
        fetch position, so held events would not come again); one that moves away is
        forgotten at the assignment, its held events unacknowledged, and the next owner
        reads them from the committed offset."""
        async with self.lock:
            started = time.monotonic()
            for task in self.tasks.values():
                await task.revoke()
            self.ready = lambda: False
            if self.tasks:
                log.info("revoked %d tasks in %.2fs", len(self.tasks), time.monotonic() - started)

    async def assign(self, partitions: Iterable[int], ready: Callable[[], bool]) -> None:
        """The new assignment: forget tasks that moved away (none of their timers fires
        here again); keep the others. New ones are restored before their first event."""
        async with self.lock:
            self.assigned = set(partitions)
            self.ready = ready
            self.ctx.store.keep_prefetched(self.assigned)
            for number in [n for n in self.tasks if n not in self.assigned]:
                del self.tasks[number]
            self.metrics.members.set(self.members)

    # --- batches -----------------------------------------------------------------------
    async def _task(self, number: int) -> PartitionTask | None:
        if self.assigned is not None and number not in self.assigned:
            return None  # a message fetched before a revocation: the new owner has it
        task = self.tasks.get(number)
        if task is None:
            task = PartitionTask(number, self.ctx)
            await task.restore()
            self.tasks[number] = task
            self.metrics.members.set(self.members)
        return task

    async def _handle(self, batch: Sequence[Inbound]) -> None:
        now = self.clock()
        wall = time.monotonic()
        m = self.metrics
        by_task: dict[int, list[Inbound]] = {}
        for item in batch:
            by_task.setdefault(item.partition, []).append(item)
        for number, items in by_task.items():
            task = await self._task(number)
            if task is None:
                continue
            items = self._in_order(task, items)
            delivered = [item for item in items if task.deliver(item)]
            self.skipped += len(items) - len(delivered)
            control = [item for item in delivered if item.topic == self.ctx.community_topic]
            if control:  # shares and watermarks of community periods, not events
                task.control(control)
                delivered = [item for item in delivered if item.topic != self.ctx.community_topic]
            self.processed += len(delivered)
            if not delivered:
                if task.due(wall):
                    await task.checkpoint()
                continue
            task.seen(delivered, wall)
            valid: list[tuple[Inbound, EventBase]] = []
            kinds: Counter[tuple[str, str]] = Counter()
            for item in delivered:
                event = self._decode(item, now, task)
                if event is not None:
                    kinds[(item.topic, event.event_type)] += 1  # type: ignore[attr-defined]
                    valid.append((item, event))
            # counted once per label set and batch: a labels() lookup per event cost 2 %
            for topic, n in Counter(item.topic for item in delivered).items():
                m.events_received.labels(topic).inc(n)
            for (topic, kind), n in kinds.items():
                m.events_valid.labels(topic, kind).inc(n)
            fresh = await self._drop_duplicates(valid, task)
            task.hold(fresh, wall)
            task.release(wall)
            if task.due(wall):
                await task.checkpoint()
        self._track_lag(batch)
        self._gauges()

    def _in_order(self, task: PartitionTask, items: list[Inbound]) -> list[Inbound]:
        """The messages of a batch the task can take: per topic, those before a hole.

        Input topics hold no transaction markers and are not compacted, so offsets are
        consecutive and a delivery past the offset the task needs next is a hole:
        messages the consumer skipped. Faust makes them after a rebalance (it drops what
        it had fetched for a partition that stays and goes on from its fetch position;
        :mod:`streams.consumer`). The messages from the hole on are set aside, never
        acknowledged, so no commit can pass the hole, and the partition is rewound to
        the missing offset: they come again, in order. A hole that is still there after
        :data:`MAX_REWINDS` rewinds (its messages are gone from the broker: retention
        deleted them) is taken as lost: counted in ``pulse_offset_holes_total`` and logged.
        """
        taken: list[Inbound] = []
        following: dict[str, int] = {}
        rewound: set[str] = set()
        for item in items:
            if item.topic in rewound:
                continue
            expected = following.get(item.topic, task.expected(item.topic))
            if expected is not None and item.offset > expected:
                if self._rewind(item, expected):
                    rewound.add(item.topic)
                    continue
                self.holes += item.offset - expected
                self.metrics.offset_holes.labels(item.topic).inc(item.offset - expected)
                log.warning(
                    "%s[%d]: offsets %d-%d were never delivered",
                    item.topic,
                    item.partition,
                    expected,
                    item.offset - 1,
                )
            taken.append(item)
            following[item.topic] = max(item.offset + 1, expected or 0)
        return taken

    def _rewind(self, item: Inbound, expected: int) -> bool:
        """Ask for the partition from ``expected`` again; False once its rewinds are spent."""
        if self.rewinder is None:
            return False
        tp = (item.topic, item.partition)
        at, count = self._rewinds.get(tp, (expected, 0))
        count = count + 1 if at == expected else 1
        if count > MAX_REWINDS:
            del self._rewinds[tp]
            return False
        self._rewinds[tp] = (expected, count)
        self.rewinds += 1
        self.metrics.input_rewinds.labels(item.topic).inc()
        if count == 1:
            log.info(
                "%s[%d]: delivered %d where %d was next; rewinding",
                item.topic,
                item.partition,
                item.offset,
                expected,
            )
        self.rewinder(item.topic, item.partition, expected)
        return True

    def _decode(self, item: Inbound, now: datetime, task: PartitionTask) -> EventBase | None:
        try:
            return decode_event(
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
            self._reject(item, exc, now, task)
            return None

    def _reject(
        self, item: Inbound, exc: EventRejected, now: datetime, task: PartitionTask
    ) -> None:
        """Dead letter and ``failed_events`` row, both part of the task's next checkpoint."""
        self.rejected += 1
        m = self.metrics
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
        self.ctx.outputs.produce_plain(self.dead_letter_topic, key, value, list(headers))
        checkpoint = task.open
        checkpoint.add_rows(
            "failed_events",
            [
                failed_row(
                    item.value,
                    key=item.key,
                    topic=item.topic,
                    partition=item.partition,
                    offset=item.offset,
                    reason=exc.reason,
                    error_class=type(exc).__name__,
                    detail=exc.detail,
                    pseudonym=self.ctx.pseudonym,
                    failed_at=now,
                    tags=checkpoint.tags,
                )
            ],
        )
        task.finished(item)

    async def _drop_duplicates(
        self, valid: list[tuple[Inbound, EventBase]], task: PartitionTask
    ) -> list[tuple[Inbound, EventBase]]:
        if not valid:
            return []
        ids = [str(event.event_id) for _, event in valid]
        seen = await self.ctx.index.seen(ids)
        fresh: list[tuple[Inbound, EventBase]] = []
        batch_ids: set[str] = set()
        pending = task.pending_ids
        for (item, event), event_id in zip(valid, ids, strict=True):
            if event_id in seen or event_id in batch_ids or event_id in pending:
                self.duplicates += 1
                self.metrics.events_duplicate.labels(item.topic).inc()
                task.finished(item)
                continue
            batch_ids.add(event_id)
            fresh.append((item, event))
        return fresh

    # --- what the HTTP endpoint reads (from its own thread) ----------------------------------
    def local_member(self, member_id: str) -> dict[str, Any] | None:
        """The member's scores from this worker's state (None: not a member of a task
        here, or one who withdrew analytics consent). Computed with the task's current
        models at the member's last score, as ``member_scores`` has it."""
        for task in list(self.tasks.values()):
            try:
                row = task.engine.latest_score(member_id).to_row()
            except UnknownMember:
                continue
            except Exception:  # the task moved on under our feet: ClickHouse answers
                return None
            for name in ("scored_at", "last_event_at"):  # milliseconds, as ClickHouse has
                moment = row[name]
                row[name] = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
            return row
        return None

    def suppressed(self, pseudonym: str) -> bool:
        """Whether a member (by pseudonym) withdrew analytics consent or asked to be erased,
        on a task here: ClickHouse may hold their rows until the erasure has run."""
        return any(
            pseudonym in task.opted_out
            or pseudonym in task.erasures  # erasure committing or committed, rows not gone yet
            or pseudonym in task.open.erasures  # erasure applied, not committed yet
            for task in list(self.tasks.values())
        )

    # --- what status and metrics read ----------------------------------------------------
    @property
    def members(self) -> int:
        return sum(len(task.engine.states) for task in self.tasks.values())

    @property
    def unacknowledged(self) -> int:
        """Messages delivered and not acknowledged yet (held, or waiting for a commit)."""
        return sum(task.unacknowledged for task in self.tasks.values())

    @property
    def acked(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> highest offset up to which every message is acknowledged."""
        out: dict[tuple[str, int], int] = {}
        for task in self.tasks.values():
            out.update(task.acked_through())
        return out

    def acknowledged(self, topic: str, partition: int) -> tuple[int, int] | None:
        """The offsets of ``topic`` / ``partition`` a task here acknowledged as one
        contiguous run, (first, last) (None: no task here tracks it, or none yet): what
        the consumer may commit (:mod:`streams.consumer`)."""
        task = self.tasks.get(partition)
        tracker = task.trackers.get(topic) if task is not None else None
        return None if tracker is None else tracker.acknowledged

    def _gauges(self) -> None:
        self.metrics.events_held.set(self.unacknowledged)

    def _track_lag(self, batch: Sequence[Inbound]) -> None:
        wall = time.time()
        latest: dict[tuple[str, int], float] = {}
        for item in batch:
            if item.timestamp is not None:
                latest[(item.topic, item.partition)] = item.timestamp
        for (topic, partition), ts in latest.items():
            self.metrics.consumer_lag_seconds.labels(topic, str(partition)).set(max(0.0, wall - ts))

    def status(self) -> dict[str, Any]:
        return {
            "tasks": {n: t.status() for n, t in sorted(self.tasks.items())},
        }
