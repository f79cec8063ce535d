"""End offsets of the input partitions, asked of the broker, with the time they were asked.

The event-time order (:mod:`streams.ordering`) lets the horizon pass an input that
delivered up to the high watermark of its last fetch. That watermark is as old as
the fetch: a producer's batches for two partitions reach the broker in either
order, so a fetch of one input can bring events newer than ones the other input
holds already but has not fetched again. :class:`EndOffsets` asks the broker for
each watched partition's end offset every ``interval`` seconds, in a thread of its
own, and keeps it with the (monotonic) time the question was sent: an input whose
delivered offset reaches an end asked at time ``t`` held nothing else produced
before ``t``, so the horizon may pass it for events delivered before ``t``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

__all__ = ["EndOffsets"]

log = logging.getLogger(__name__)


class EndOffsets(threading.Thread):
    """The latest end offset of each watched topic-partition, and when it was asked."""

    def __init__(
        self, bootstrap: str, interval: float = 0.5, config: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(name="pulse-end-offsets", daemon=True)
        self.bootstrap = bootstrap
        self.interval = interval
        self.config = dict(config or {})
        self._watched: frozenset[tuple[str, int]] = frozenset()
        self._ends: dict[tuple[str, int], tuple[int, float]] = {}
        self._stopping = threading.Event()
        self.asked = 0  # questions answered

    def watch(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Ask for these from now on (the worker's input partitions after a rebalance)."""
        watched = frozenset(partitions)
        self._watched = watched
        for key in [k for k in self._ends if k not in watched]:
            self._ends.pop(key, None)

    def latest(self, topic: str, partition: int) -> tuple[int, float] | None:
        """(end offset, monotonic time the question was sent), or None if not asked yet."""
        return self._ends.get((topic, partition))

    def run(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"pulse-ends-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "logger": log,
                **self.config,
            }
        )
        try:
            while not self._stopping.is_set():
                for topic, partition in sorted(self._watched):
                    asked = time.monotonic()
                    try:
                        _, high = consumer.get_watermark_offsets(
                            TopicPartition(topic, partition), timeout=5, cached=False
                        )
                    except Exception as exc:  # the broker away: the horizon waits
                        log.debug("end offset of %s:%d: %s", topic, partition, exc)
                        continue
                    if high >= 0 and (topic, partition) in self._watched:
                        self._ends[(topic, partition)] = (int(high), asked)
                        self.asked += 1
                self._stopping.wait(self.interval)
        finally:
            consumer.close()

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(10)
