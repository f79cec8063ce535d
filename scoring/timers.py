"""Silence timers: a heap of due times, one live entry per member, invalidated lazily.

A member needs attention at a known event time: the next silence boundary or
label deadline. Each activity moves that time; :meth:`TimerHeap.schedule`
pushes the new entry and records it as the member's live one, leaving the old
entry in the heap. When an entry surfaces that is not its member's live entry
any more, it is dropped without looking at the member (lazy invalidation).
Advancing the clock therefore touches only members whose live timer came due
-- members going silent or with a label expiring -- not members times days.
Superseded entries cost one push each and are compacted away when they
outnumber live ones. Entries due at the same time surface in member id order,
so the order depends only on the members' states, not on how they were loaded.

>>> heap = TimerHeap()
>>> heap.schedule("a", 3.0), heap.schedule("b", 5.0), heap.schedule("a", 10.0)
(True, True, True)
>>> heap.schedule("a", 10.0)  # already the live entry
False
>>> heap.pop_due(6.0), heap.pop_due(6.0)  # a's entry at 3.0 was superseded by 10.0
(('b', 5.0), None)
>>> heap.stale, heap.pop_due(100.0), len(heap)
(1, ('a', 10.0), 0)
"""

from __future__ import annotations

import heapq

__all__ = ["TimerHeap"]

_COMPACT_SLACK = 1024


class TimerHeap:
    """Due times of members, earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str, int]] = []
        self._live: dict[str, tuple[float, int]] = {}
        self._seq = 0
        self.stale = 0

    def schedule(self, member_id: str, due: float) -> bool:
        """Make ``due`` the member's live due time; True if an entry was pushed."""
        live = self._live.get(member_id)
        if live is not None and live[0] == due:
            return False
        self._seq += 1
        heapq.heappush(self._heap, (due, member_id, self._seq))
        self._live[member_id] = (due, self._seq)
        if len(self._heap) > 2 * len(self._live) + _COMPACT_SLACK:
            self._compact()
        return True

    def _compact(self) -> None:
        self.stale += len(self._heap) - len(self._live)
        self._heap = [(due, member, seq) for member, (due, seq) in self._live.items()]
        heapq.heapify(self._heap)

    def cancel(self, member_id: str) -> None:
        """Forget a member's live entry (its heap entry goes stale)."""
        self._live.pop(member_id, None)

    def pop_due(self, until: float) -> tuple[str, float] | None:
        """The next live entry due at or before ``until``, removed; None if there is none."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            due, member_id, seq = heapq.heappop(heap)
            live = self._live.get(member_id)
            if live is None or live[1] != seq:
                self.stale += 1
                continue
            del self._live[member_id]
            return member_id, due
        return None

    @property
    def entries(self) -> int:
        """Heap entries, live and superseded."""
        return len(self._heap)

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, member_id: object) -> bool:
        return member_id in self._live
