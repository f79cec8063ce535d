"""Faust's Kafka consumer, adapted so that a commit never passes a message Pulse did not store.

Pulse acknowledges a message only once every message before it on its
topic-partition is stored (:class:`streams.offsets.OffsetTracker`), and Faust
commits the acknowledged offsets. Two things of Faust's consumer break that rule
around a rebalance, and this module is the one place that adapts them:

* **Gaps.** When a fetch returns an offset more than one past the last one Faust
  read, Faust records the offsets in between as a *gap*, and its next commit
  passes them as if they had been acknowledged. That serves compacted topics and
  transaction markers; Pulse's inputs are neither, so their offsets are
  consecutive and a jump means messages that were never delivered. After a
  rebalance Faust drops what it had fetched for a partition that stays on the
  worker and goes on from its fetch position: the gap then covers exactly the
  dropped messages, and the commit passed them (README, "No commit passes a
  message that was never delivered"). :class:`PulseConsumer` records no gaps:
  Faust commits what was acknowledged, and nothing else.
* **Rewinds.** The dropped messages must still come. The pipeline takes a
  delivery past the offset a task needs next as a hole, sets the messages from
  there aside (unacknowledged), and asks :meth:`Rewinder.rewind` to move the
  partition's fetch position back to the missing offset. The seek runs in the
  consumer's own thread (Faust's ``seek_wait``) and is not awaited under the
  pipeline's lock: a rebalance callback waits for that lock while the consumer
  thread waits for the callback.

* **Acknowledgements lost in a revocation.** Faust forgets a partition's
  acknowledged offsets when it is revoked (``on_partitions_revoked``), before the
  app's revocation handler runs -- and Pulse's handler commits its tasks and
  acknowledges messages just then. Two rebalances in a row (two workers joining
  one after the other) drop those acknowledgements for a partition that stays:
  Faust's list then starts past its committed offset, and Faust never commits it
  again (``_new_offset`` refuses a hole at the head). Seen in the scale-out test: a
  worker had acknowledged everything and its two kept partitions stayed committed
  at the end of the first part. Pulse's own trackers know the acknowledged prefix
  of every partition it keeps (:attr:`PulseConsumer.acknowledged`), so the commit
  offset comes from them: the prefix is contiguous by construction, so it passes
  nothing that was not stored.

The adapter leans on three of Faust's consumer methods: ``_add_gap`` and
``_new_offset`` (overridden) and ``seek_wait`` (called), and on ``_acked``,
``_acked_index`` and ``_committed_offset``. ``tests/unit/streams/test_consumer.py`` fails when Faust
renames or re-signs them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

__all__ = ["Acknowledged", "PulseConsumer", "PulseConsumerThread", "PulseTransport", "Rewinder"]

log = logging.getLogger(__name__)


#: (topic, partition) -> (first, last): the offsets Pulse acknowledged on this worker
#: as one contiguous run (None: no task here tracks the partition, or none yet).
Acknowledged = Callable[[TP], tuple[int, int] | None]


#: How long the broker may hold a fetch that found nothing new (aiokafka's
#: ``fetch_max_wait_ms``). Faust sets 1,500 ms; Tansu then answers a live stream's
#: fetches about every 0.4 s (p50 0.38 s, p99 0.75 s from produce to delivery, against
#: 0.03 s and 0.06 s at 100 ms), which came straight on top of the freshness figure.
FETCH_MAX_WAIT_MS = 100


class PulseConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with a fetch wait that suits a live stream."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when it starts its fetcher
        return consumer


class PulseConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer without gaps: a commit covers acknowledged offsets only."""

    #: Set by the app once the pipeline exists: Pulse's acknowledged prefixes.
    acknowledged: Acknowledged | None = None

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return PulseConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit for ``tp``: past Pulse's acknowledged prefix when a task
        here tracks it (whatever acknowledgements Faust forgot in a revocation), else
        Faust's own reckoning."""
        covered = self.acknowledged(tp) if self.acknowledged is not None else None
        committed = self._committed_offset.get(tp)
        if covered is None or covered[0] > (committed or 0):
            # nothing tracked here, or a run that does not reach the committed offset
            offset: int | None = super()._new_offset(tp)
            return offset
        through = covered[1]
        acked = self._acked.get(tp)
        if acked:  # every one of them is in the prefix or past it: keep the latter
            self._acked[tp] = [o for o in acked if o > through]
            self._acked_index[tp].difference_update(o for o in acked if o <= through)
        return through + 1

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust would let its next commit pass ``offset_from..offset_to``; Pulse's
        inputs have consecutive offsets, so those messages are undelivered, not absent."""
        log.debug("%s: offsets %d-%d not delivered yet (no gap)", tp, offset_from, offset_to)


class PulseTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`PulseConsumer`."""

    Consumer: ClassVar[Any] = PulseConsumer


class Rewinder:
    """Moves a partition's fetch position back, without blocking the caller.

    ``consumer`` is a callable returning Faust's consumer (it exists once the app
    started). A rewind that cannot be done (the partition left the worker, the
    consumer stopped) is dropped: the next owner reads from the committed offset,
    which never passes the hole.
    """

    def __init__(self, consumer: Any, timeout: float = 30.0) -> None:
        self._consumer = consumer
        self.timeout = timeout
        self._pending: set[asyncio.Task[None]] = set()

    def rewind(self, topic: str, partition: int, offset: int) -> None:
        task = asyncio.ensure_future(self._seek(TP(topic, partition), offset))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _seek(self, tp: TP, offset: int) -> None:
        try:
            await asyncio.wait_for(self._consumer().seek_wait({tp: offset}), self.timeout)
            log.info("%s[%d]: rewound to offset %d", tp.topic, tp.partition, offset)
        except Exception as exc:  # not assigned any more, stopping: nothing to rewind
            log.info("%s[%d]: no rewind to %d (%s)", tp.topic, tp.partition, offset, exc)
