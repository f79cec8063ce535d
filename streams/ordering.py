"""Event-time order across input topics: hold each event until its partition's clock passes it.

A member's interactions and purchases arrive on two topics that are consumed
independently. In a backfill the small purchases topic runs far ahead of the
interactions topic in event time, so applying events as they arrive would
apply a member's purchase before the interactions that led to it, and label
snapshots with the wrong outcome. :class:`EventTimeOrder` restores the order
the events happened in, per partition (input topics are co-partitioned by
member id):

* every input topic-partition reports the newest event time it delivered;
* a partition's **horizon** is the minimum of that over its inputs -- nothing
  older can still arrive from an input that is behind;
* an input that delivered nothing for ``idle_seconds`` of wall time (a quiet
  purchases topic in live operation, or a topic with no data for that
  partition) stops holding the horizon back; when every input of a partition is
  idle, everything delivered is in, and the newest time counts;
* events at or before the horizon are released, oldest first (ties by topic,
  partition, offset, so the order does not depend on how fetches interleaved);
  later events are held -- and not acknowledged -- until the horizon passes them.

This is the watermark rule of multi-input operators (Flink's minimum over
inputs, with idleness). The price is latency: in live operation an interaction
waits at most ``idle_seconds`` for a quiet purchases input. Memory is bounded by
``max_held``: past it the oldest held events are released anyway (counted in
:attr:`EventTimeOrder.forced`; they may then be applied slightly out of order).

>>> from datetime import datetime, UTC
>>> order = EventTimeOrder(["i", "p"], idle_seconds=5.0)
>>> t = lambda day: datetime(2026, 3, day, tzinfo=UTC)
>>> order.add([(_Item("p", 0, 0), _Event(t(9)))], now=0.0)  # purchases ahead
>>> order.add([(_Item("i", 0, 0), _Event(t(2))), (_Item("i", 0, 1), _Event(t(5)))], now=0.0)
>>> [event.occurred_at.day for _, event in order.release(now=1.0)]
[2, 5]
>>> order.held, [e.occurred_at.day for _, e in order.release(now=6.0)]  # "i" fell idle
(1, [9])
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from scoring.clock import from_ts

__all__ = ["EventTimeOrder"]


class _Delivered(Protocol):
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


class _Timed(Protocol):
    @property
    def occurred_at(self) -> datetime: ...


ItemT = TypeVar("ItemT", bound=_Delivered)
EventT = TypeVar("EventT", bound=_Timed)


@dataclass
class _Input:
    newest: float | None  # newest event time delivered (epoch seconds); None: nothing yet
    last_delivery: float  # wall time (monotonic seconds) of its last delivery


class EventTimeOrder(Generic[ItemT, EventT]):
    """Holds (item, event) pairs per partition; releases them in event-time order."""

    def __init__(self, topics: Iterable[str], idle_seconds: float, max_held: int = 200_000) -> None:
        if idle_seconds <= 0:
            raise ValueError("idle_seconds must be > 0")
        if max_held < 1:
            raise ValueError("max_held must be >= 1")
        self.topics = tuple(topics)
        self.idle_seconds = idle_seconds
        self.max_held = max_held
        self.forced = 0
        self._inputs: dict[tuple[str, int], _Input] = {}
        self._held: dict[int, list[tuple[float, str, int, int, ItemT, EventT]]] = {}
        self._count = 0

    @property
    def held(self) -> int:
        """Events waiting for their partition's horizon."""
        return self._count

    def add(self, items: Sequence[tuple[ItemT, EventT]], now: float) -> None:
        """Record a delivery of valid, new events and hold them."""
        for item, event in items:
            partition = item.partition
            if partition not in self._held:
                self._held[partition] = []
                for topic in self.topics:  # an input that never delivers idles out in time
                    self._inputs.setdefault((topic, partition), _Input(None, now))
            at = event.occurred_at.timestamp()
            state = self._inputs.setdefault((item.topic, partition), _Input(None, now))
            state.newest = at if state.newest is None else max(state.newest, at)
            state.last_delivery = now
            entry = (at, item.topic, partition, item.offset, item, event)
            heapq.heappush(self._held[partition], entry)
            self._count += 1

    def horizon(self, partition: int, now: float) -> float | None:
        """Epoch seconds up to which the partition's events are all in; None: not yet known."""
        inputs = [s for (_, p), s in self._inputs.items() if p == partition]
        if not inputs:
            return None
        active = [s for s in inputs if now - s.last_delivery < self.idle_seconds]
        if active:
            if any(s.newest is None for s in active):
                return None
            return min(s.newest for s in active if s.newest is not None)
        newest = [s.newest for s in inputs if s.newest is not None]
        return max(newest) if newest else None

    def horizons(self, now: float) -> dict[int, datetime]:
        """Every known partition's horizon, as aware datetimes (unknown ones left out)."""
        out: dict[int, datetime] = {}
        for partition in self._held:
            h = self.horizon(partition, now)
            if h is not None:
                out[partition] = from_ts(h)
        return out

    def release(self, now: float) -> list[tuple[ItemT, EventT]]:
        """The held events at or before their partition's horizon, oldest first."""
        runs: list[list[tuple[float, str, int, int, ItemT, EventT]]] = []
        for partition, heap in self._held.items():
            h = self.horizon(partition, now)
            run = []
            while heap and h is not None and heap[0][0] <= h:
                run.append(heapq.heappop(heap))
            if run:
                runs.append(run)
        released = list(heapq.merge(*runs, key=lambda e: e[:4]))
        self._count -= len(released)
        if self._count > self.max_held:
            released.extend(self._force(self._count - self.max_held))
        return [(entry[4], entry[5]) for entry in released]

    def _force(self, n: int) -> list[tuple[float, str, int, int, ItemT, EventT]]:
        merged = heapq.merge(*(sorted(h) for h in self._held.values()), key=lambda e: e[:4])
        forced = [entry for _, entry in zip(range(n), merged, strict=False)]
        for entry in forced:
            self._held[entry[2]].remove(entry)
        for heap in self._held.values():
            heapq.heapify(heap)
        self._count -= len(forced)
        self.forced += len(forced)
        return forced

    def drop(self, partitions: Iterable[int]) -> int:
        """Forget revoked partitions: their held events are redelivered to the new owner."""
        dropped = 0
        for partition in partitions:
            dropped += len(self._held.pop(partition, []))
            for key in [k for k in self._inputs if k[1] == partition]:
                del self._inputs[key]
        self._count -= dropped
        return dropped


@dataclass(frozen=True)
class _Item:  # doctest helpers
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class _Event:
    occurred_at: datetime
