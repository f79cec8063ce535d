"""Event-time order across input topics: hold each event until every input has passed it.

A member's interactions and purchases arrive on two topics that are consumed
independently. In a backfill the small purchases topic runs far ahead of the
interactions topic in event time, so applying events as they arrive would
apply a member's purchase before the interactions that led to it, and label
snapshots with the wrong outcome. :class:`EventTimeOrder` restores the order
the events happened in, across every input topic-partition the worker reads:

* every input topic-partition reports the newest event time it delivered;
* the **horizon** is the minimum of that over the inputs -- nothing older can
  still arrive from an input that is behind;
* an input that has caught up -- its last delivered offset is the last one the
  broker reported in its latest fetch (the high watermark) -- is **idle** and
  stops holding the horizon back: whatever it delivers next is produced later --
  once the broker confirms it. A fetch's high watermark is as old as the fetch,
  and a producer's batches for two partitions reach the broker in either order,
  so with ``ends`` (:class:`streams.end_offsets.EndOffsets`) an event newer than
  a caught-up input's newest is released, and the clock passes it, only if it was
  delivered before the broker was last asked that input's end offset and had
  nothing more.
  An input that is behind never is, however long the consumer stalls. Before
  its first fetch reports a high watermark, the end offset the broker was last
  asked stands in for it. An input that delivered nothing is caught up only if
  its partition is empty; one whose partition holds messages is behind (its
  first delivery can take a while behind a backlog of the other input) for up
  to ``STALLED`` x ``idle_seconds``. Knowing neither, an input is idle after
  ``idle_seconds`` without a delivery. The inputs
  are known up front (``partitions``: every input topic-partition the worker
  reads), so one that has not delivered yet holds the horizon back too, until
  it delivers or -- ``idle_seconds`` after the first delivery of any input --
  falls idle. When every input is idle, everything delivered is in, and the
  newest time counts;
* events at or before the horizon are released oldest first, ties broken by
  (topic, partition, offset): the order depends on the events, not on how
  fetches interleaved, so a restarted worker applies them in the same order as
  one that never stopped. Later events are held -- and not acknowledged --
  until the horizon passes them.

This is the watermark rule of multi-input operators (Flink's minimum over
inputs, with idleness). Memory is bounded by ``max_held``:
past it the oldest held events are released anyway (counted in
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
from collections.abc import Callable, Iterable, Sequence
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
    last_delivery: float | None  # wall time (monotonic seconds) of its last delivery
    offset: int | None = None  # offset of its last delivery
    expected: bool = False  # offset is where it will start (see starts_at), not a delivery


#: An input that delivered nothing although the broker holds messages for it is idle
#: only after this many ``idle_seconds`` (see ``EventTimeOrder._idle``).
STALLED = 12

#: (topic, partition) -> the broker's high watermark from the latest fetch (None: unknown)
HighWater = Callable[[str, int], int | None]
#: (topic, partition) -> (end offset, monotonic time it was asked of the broker) or None
EndOffset = Callable[[str, int], tuple[int, float] | None]


class EventTimeOrder(Generic[ItemT, EventT]):
    """Holds (item, event) pairs; releases them in event-time order."""

    def __init__(
        self,
        topics: Iterable[str],
        idle_seconds: float,
        max_held: int = 200_000,
        highwater: HighWater | None = None,
        partitions: Iterable[int] = (),
        ends: EndOffset | None = None,
    ) -> None:
        if idle_seconds <= 0:
            raise ValueError("idle_seconds must be > 0")
        if max_held < 1:
            raise ValueError("max_held must be >= 1")
        self.topics = tuple(topics)
        self.idle_seconds = idle_seconds
        self.max_held = max_held
        self.forced = 0
        self.highwater = highwater
        self.ends = ends
        self.gated = 0  # releases that waited for an end offset asked after a delivery
        self.behind = 0  # events delivered after the horizon had passed them (out of order)
        self._released_to: float | None = None  # event time of the newest event released
        self._gate: float | None = None  # the horizon stops short of this (see release)
        self._inputs: dict[tuple[str, int], _Input] = {}
        # (event time, topic, partition, offset, delivered at, item, event)
        self._held: list[tuple[float, str, int, int, float, ItemT, EventT]] = []
        self._partitions: set[int] = set()
        self._first_delivery: float | None = None  # wall time the first message came in
        for partition in partitions:  # known up front: each holds the horizon from the start
            self._register(partition, None)

    @property
    def held(self) -> int:
        """Events waiting for the horizon."""
        return len(self._held)

    def seen(self, items: Iterable[ItemT], now: float) -> None:
        """Record deliveries of any messages (rejected and duplicate ones included)."""
        for item in items:
            if self._first_delivery is None:
                self._first_delivery = now
            state = self._input(item.topic, item.partition, now)
            state.last_delivery = now
            state.offset = item.offset if state.offset is None else max(state.offset, item.offset)
            state.expected = False

    def starts_at(self, topic: str, partition: int, offset: int) -> None:
        """The input will deliver from ``offset`` on (everything before it is applied: a
        restored checkpoint says so). Until it delivers, it is idle only once the broker
        reports no message at or after ``offset`` -- never by the wall clock, so a
        partition that is slow to be fetched after a rebalance cannot let the horizon
        pass its events."""
        state = self._input(topic, partition, None)
        if state.offset is None:
            state.offset = offset - 1
            state.expected = True

    def add(self, items: Sequence[tuple[ItemT, EventT]], now: float) -> None:
        """Record a delivery of valid, new events and hold them."""
        self.seen((item for item, _ in items), now)
        for item, event in items:
            at = event.occurred_at.timestamp()
            if self._released_to is not None and at < self._released_to:
                self.behind += 1
            state = self._input(item.topic, item.partition, now)
            state.newest = at if state.newest is None else max(state.newest, at)
            entry = (at, item.topic, item.partition, item.offset, now, item, event)
            heapq.heappush(self._held, entry)

    def _register(self, partition: int, now: float | None) -> None:
        """Every input topic of ``partition`` (one that never delivers idles out in time)."""
        if partition not in self._partitions:
            self._partitions.add(partition)
            for name in self.topics:
                self._inputs.setdefault((name, partition), _Input(None, now))

    def _input(self, topic: str, partition: int, now: float | None) -> _Input:
        self._register(partition, now)
        return self._inputs.setdefault((topic, partition), _Input(None, now))

    def horizon(self, now: float) -> float | None:
        """Epoch seconds up to which every event is in; None: not known yet."""
        active = [s for key, s in self._inputs.items() if not self._idle(key, s, now)]
        if active:
            if any(s.newest is None for s in active):
                return None
            return min(s.newest for s in active if s.newest is not None)
        newest = [s.newest for s in self._inputs.values() if s.newest is not None]
        return max(newest) if newest else None

    def _caught_up(self, key: tuple[str, int], state: _Input) -> bool | None:
        """Whether the input delivered up to its last fetch's high watermark, or -- before
        any fetch reported one -- the end offset the broker was last asked (None: neither
        is known). An input that delivered nothing is caught up only with an empty
        partition."""
        high = self.highwater(*key) if self.highwater is not None else None
        if high is None and self.ends is not None:
            end = self.ends(*key)
            high = None if end is None else end[0]
        if high is None:
            return None
        return (-1 if state.offset is None else state.offset) + 1 >= high

    def _idle(self, key: tuple[str, int], state: _Input, now: float) -> bool:
        caught_up = self._caught_up(key, state)
        if caught_up or (caught_up is False and state.offset is not None):
            return caught_up
        if state.expected:  # nothing delivered yet, and no fetch says it is caught up
            return False
        # an input that never delivered counts from the first delivery of any input
        since = state.last_delivery if state.last_delivery is not None else self._first_delivery
        if caught_up is False:
            # nothing delivered, and the broker holds messages: behind (its first fetch
            # can take a while behind a backlog of the other input), unless nothing
            # comes for STALLED x idle_seconds (the group's offset is at the end already)
            return since is not None and now - since >= STALLED * self.idle_seconds
        # neither a high watermark nor an end offset: idle after idle_seconds without one
        return since is not None and now - since >= self.idle_seconds

    def caught_up(self, now: float) -> bool:
        """Nothing held, and every input idle: all that was produced so far is applied."""
        return not self._held and all(
            self._idle(key, state, now) for key, state in self._inputs.items()
        )

    def backlog(self) -> int | None:
        """Messages the broker holds beyond what the inputs delivered, by the last fetches'
        high watermarks (None: an input has none yet)."""
        if self.highwater is None:
            return None
        total = 0
        for key, state in self._inputs.items():
            high = self.highwater(*key)
            if high is None:
                return None
            total += max(0, high - (-1 if state.offset is None else state.offset) - 1)
        return total

    def pending(self) -> bool:
        """Whether more is known to be on its way: events held, or an input the broker
        says holds messages beyond what it delivered (an input with no fetch yet counts
        as behind, one whose partition never held a message does not)."""
        if self._held:
            return True
        if self.highwater is None:
            return False
        for key, state in self._inputs.items():
            high = self.highwater(*key)
            if high is None:
                return True
            if state.offset is not None and state.offset + 1 < high:
                return True
            if state.offset is None and high > 0:
                return True
        return False

    def horizon_time(self, now: float) -> datetime | None:
        """:meth:`horizon` as an aware datetime."""
        h = self.horizon(now)
        if h is not None and self._gate is not None:
            h = min(h, self._gate)
        return None if h is None else from_ts(h)

    def release(self, now: float) -> list[tuple[ItemT, EventT]]:
        """The held events at or before the horizon, oldest first."""
        heap = self._held
        h = self.horizon(now)
        gates = self._gates() if self.ends is not None else []
        self._gate = None
        released = []
        while heap and h is not None and heap[0][0] <= h:
            at, delivered = heap[0][0], heap[0][4]
            if any(at > newest and asked < delivered for newest, asked in gates):
                self._gate = at - 1e-6  # the clock too stops short of it
                self.gated += 1
                break
            released.append(heapq.heappop(heap))
        while len(heap) > self.max_held:
            released.append(heapq.heappop(heap))
            self.forced += 1
        if released:
            newest = max(entry[0] for entry in released)
            self._released_to = max(newest, self._released_to or newest)
        return [(entry[5], entry[6]) for entry in released]

    def _gates(self) -> list[tuple[float, float]]:
        """(newest event time, when its end offset was asked) of each input caught up by
        its last fetch: an event newer than that input's newest passes it only if it was
        delivered before the broker last said the input holds no more (-inf: not said)."""
        assert self.ends is not None
        gates = []
        for key, state in self._inputs.items():
            if not self._caught_up(key, state):
                continue
            asked = float("-inf")
            end = self.ends(*key)
            delivered = -1 if state.offset is None else state.offset
            if end is not None and delivered + 1 >= end[0]:
                asked = end[1]
            gates.append((float("-inf") if state.newest is None else state.newest, asked))
        return gates


@dataclass(frozen=True)
class _Item:  # doctest helpers
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class _Event:
    occurred_at: datetime
