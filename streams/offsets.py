"""Input offsets: acknowledged only as a contiguous prefix, and remembered in checkpoints.

A task finishes its messages out of offset order: rejects and duplicates are
done with the next checkpoint, events once the event-time horizon released them
and a checkpoint covered them. Faust commits the first run of consecutive
acknowledged offsets it finds, and does not look for a gap before it when it
has committed nothing yet, so acknowledging out of order can commit past a
message that is still held. :class:`OffsetTracker` therefore tells Faust a
message is done only once every message delivered before it on its
topic-partition is done too.

>>> tracker = OffsetTracker()
>>> for offset in (0, 1, 2):
...     _ = tracker.delivered(offset, f"m{offset}")
>>> tracker.done(1)  # offset 0 is still held: nothing may be acknowledged yet
[]
>>> tracker.done(0)
['m0', 'm1']
>>> tracker.acked_through, tracker.pending
(1, 1)

:class:`AppliedOffsets` is what a checkpoint records of an input: every offset
below ``below`` is applied, and so are the few in ``beyond`` (released ahead of
an older, held event). A redelivered message it covers -- after a rebalance the
new owner reads from the group's committed offset, which lags the checkpoint --
is recognised and skipped instead of being applied a second time.

>>> applied = AppliedOffsets.empty()
>>> applied = applied.with_offsets([0, 1, 3])
>>> applied.below, sorted(applied.beyond), applied.covers(1), applied.covers(2)
(2, [3], True, False)
>>> applied.with_offsets([2]).below
4
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["OffsetTracker", "AppliedOffsets"]

M = TypeVar("M")


class OffsetTracker(Generic[M]):
    """The messages of one topic-partition in delivery order; releases them in order."""

    def __init__(self) -> None:
        self._order: deque[int] = deque()
        self._messages: dict[int, M] = {}
        self._done: set[int] = set()
        self.acked_through = -1  # highest offset whose message (and all before) is released
        self.start: int | None = None  # the first offset tracked: the prefix starts there

    @property
    def next_expected(self) -> int | None:
        """The offset after the newest one tracked (None: nothing tracked yet)."""
        if self._order:
            return self._order[-1] + 1
        return self.acked_through + 1 if self.acked_through >= 0 else None

    @property
    def acknowledged(self) -> tuple[int, int] | None:
        """The offsets acknowledged so far as one run, (first, last); None before any."""
        if self.start is None or self.acked_through < self.start:
            return None
        return self.start, self.acked_through

    @property
    def pending(self) -> int:
        """Messages delivered and not released yet."""
        return len(self._order)

    def delivered(self, offset: int, message: M) -> bool:
        """Track a delivered message; False if it is already tracked (a redelivery)."""
        if offset in self._messages or offset <= self.acked_through:
            return False
        if self._order and offset < self._order[-1]:
            raise ValueError(f"offset {offset} delivered after {self._order[-1]}")
        if self.start is None:
            self.start = offset
        self._order.append(offset)
        self._messages[offset] = message
        return True

    def done(self, offset: int) -> list[M]:
        """Mark ``offset`` done; return the messages that are now releasable, in order."""
        if offset in self._messages:
            self._done.add(offset)
        released: list[M] = []
        order, done = self._order, self._done
        while order and order[0] in done:
            first = order.popleft()
            done.discard(first)
            released.append(self._messages.pop(first))
            self.acked_through = first
        return released


@dataclass(frozen=True)
class AppliedOffsets:
    """Offsets of one input a checkpoint covers: all below ``below``, plus ``beyond``."""

    below: int
    beyond: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def empty(cls) -> AppliedOffsets:
        return cls(0)

    def covers(self, offset: int) -> bool:
        return offset < self.below or offset in self.beyond

    def with_offsets(self, offsets: Iterable[int]) -> AppliedOffsets:
        """These offsets added; the prefix grows over every consecutive one."""
        beyond = set(self.beyond)
        beyond.update(o for o in offsets if o >= self.below)
        below = self.below
        while below in beyond:
            beyond.discard(below)
            below += 1
        return AppliedOffsets(below, frozenset(beyond))

    def to_json(self) -> list[Any]:
        return [self.below, sorted(self.beyond)]

    @classmethod
    def from_json(cls, data: list[Any]) -> AppliedOffsets:
        return cls(int(data[0]), frozenset(int(o) for o in data[1]))
