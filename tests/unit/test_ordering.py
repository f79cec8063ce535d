"""Event-time order across the two input topics (streams/ordering.py), without I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from streams.ordering import STALLED, EventTimeOrder

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Item:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Event:
    occurred_at: datetime


def ev(topic: str, offset: int, hours: float, partition: int = 0) -> tuple[Item, Event]:
    return Item(topic, partition, offset), Event(T0 + timedelta(hours=hours))


def hours(released: list[tuple[Item, Event]]) -> list[float]:
    return [(e.occurred_at - T0).total_seconds() / 3600 for _, e in released]


def test_an_input_far_ahead_waits_for_the_other() -> None:
    order: EventTimeOrder[Item, Event] = EventTimeOrder(["i", "p"], idle_seconds=5.0)
    # The purchases topic was read far ahead: days of purchases before the interactions.
    order.add([ev("p", n, 24.0 * n) for n in range(5)], now=0.0)
    order.add([ev("i", n, 10.0 * n) for n in range(6)], now=0.1)
    assert hours(order.release(now=0.2)) == [0, 0, 10, 20, 24, 30, 40, 48, 50]
    assert order.held == 2  # purchases at 72 h and 96 h: interactions have not got there
    order.add([ev("i", 6, 80.0)], now=1.0)
    assert hours(order.release(now=1.0)) == [72, 80]
    # Purchases fell idle (5 s) but interactions still deliver: they alone hold the horizon.
    assert order.release(now=5.5) == []
    # Interactions stop too: everything delivered is in.
    assert hours(order.release(now=6.1)) == [96]
    assert order.held == 0


def test_when_every_input_is_idle_everything_is_released() -> None:
    order: EventTimeOrder[Item, Event] = EventTimeOrder(["i", "p"], idle_seconds=2.0)
    order.add([ev("i", 0, 1.0), ev("i", 1, 50.0)], now=0.0)
    order.add([ev("p", 0, 3.0)], now=0.0)
    assert hours(order.release(now=0.5)) == [1, 3]
    assert hours(order.release(now=2.5)) == [50]
    assert order.held == 0


def test_a_topic_that_never_delivers_holds_the_horizon_for_idle_seconds_only() -> None:
    order: EventTimeOrder[Item, Event] = EventTimeOrder(["i", "p"], idle_seconds=3.0)
    order.add([ev("i", 0, 1.0), ev("i", 1, 2.0)], now=10.0)
    assert order.release(now=12.9) == []
    assert order.horizon_time(now=12.9) is None
    assert hours(order.release(now=13.0)) == [1, 2]
    assert order.horizon_time(now=13.0) == T0 + timedelta(hours=2)


def test_partitions_are_merged_into_one_event_time_order() -> None:
    order: EventTimeOrder[Item, Event] = EventTimeOrder(["i"], idle_seconds=5.0)
    order.add([ev("i", 0, 5.0, partition=1), ev("i", 0, 1.0, partition=0)], now=0.0)
    order.add([ev("i", 1, 3.0, partition=1), ev("i", 1, 9.0, partition=0)], now=0.0)
    released = order.release(now=0.0)
    # partition 1 has delivered up to 5 h: nothing later is released yet
    assert [(i.partition, h) for (i, _), h in zip(released, hours(released), strict=True)] == [
        (0, 1.0),
        (1, 3.0),
        (1, 5.0),
    ]
    assert order.held == 1
    # partition 1 goes quiet: it stops holding the horizon back
    assert hours(order.release(now=5.0)) == [9.0]


def test_ties_are_broken_by_topic_and_offset_not_by_arrival() -> None:
    def run(first: str) -> list[tuple[str, int]]:
        order: EventTimeOrder[Item, Event] = EventTimeOrder(["i", "p"], idle_seconds=1.0)
        batches = {"i": [ev("i", 7, 2.0), ev("i", 8, 2.0)], "p": [ev("p", 3, 2.0)]}
        order.add(batches[first], now=0.0)
        order.add(batches["p" if first == "i" else "i"], now=0.0)
        return [(i.topic, i.offset) for i, _ in order.release(now=0.0)]

    assert run("i") == run("p") == [("i", 7), ("i", 8), ("p", 3)]


def test_memory_is_bounded_by_releasing_the_oldest_early() -> None:
    order: EventTimeOrder[Item, Event] = EventTimeOrder(["i", "p"], idle_seconds=5.0, max_held=3)
    order.add([ev("p", n, 100.0 + n) for n in range(5)], now=0.0)
    order.add([ev("i", 0, 1.0)], now=0.0)
    assert hours(order.release(now=0.0)) == [1, 100, 101]
    assert order.held == 3 and order.forced == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="idle_seconds"):
        EventTimeOrder(["i"], idle_seconds=0)
    with pytest.raises(ValueError, match="max_held"):
        EventTimeOrder(["i"], idle_seconds=1, max_held=0)


def test_with_high_watermarks_an_input_behind_is_never_idle_and_one_caught_up_is() -> None:
    highs = {("i", 0): 100, ("p", 0): 1}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=1.0, highwater=lambda t, p: highs.get((t, p))
    )
    order.add([ev("i", 10, 5.0)], now=0.0)  # interactions: offsets 11..99 still to come
    order.add([ev("p", 0, 50.0)], now=0.0)  # purchases: caught up (offset 0, high 1)
    assert hours(order.release(now=0.0)) == [5]  # the caught-up input does not hold back
    # however long the consumer stalls, interactions are behind: the purchase waits
    assert order.release(now=3600.0) == []
    order.add([ev("i", 99, 60.0)], now=3600.0)  # caught up now
    assert hours(order.release(now=3600.0)) == [50, 60]


def test_an_input_whose_last_messages_were_rejected_still_catches_up() -> None:
    highs = {("i", 0): 3, ("p", 0): 1}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=60.0, highwater=lambda t, p: highs[(t, p)]
    )
    order.add([ev("p", 0, 9.0)], now=0.0)  # caught up
    order.add([ev("i", 0, 1.0), ev("i", 1, 2.0)], now=0.0)  # offset 2 still to come
    assert hours(order.release(now=0.0)) == [1, 2]
    assert order.release(now=30.0) == []
    order.seen([Item("i", 0, 2)], now=30.0)  # offset 2 was a broken line: rejected
    assert hours(order.release(now=30.0)) == [9]


def test_a_partition_that_has_not_delivered_yet_holds_the_horizon() -> None:
    # After a restart partition 0 may be fetched before partition 1: partition 1's
    # (older) events must not find the clock already past them.
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=5.0, highwater=lambda topic, partition: 10**6, partitions=[0, 1]
    )
    order.add([ev("i", n, 24.0 * n, partition=0) for n in range(5)], now=0.0)
    order.add([ev("p", n, 24.0 * n + 1, partition=0) for n in range(5)], now=0.0)
    assert order.release(now=1.0) == []  # partition 1 delivered nothing yet
    order.add([ev("i", 0, 30.0, partition=1), ev("p", 0, 31.0, partition=1)], now=2.0)
    assert hours(order.release(now=2.0)) == [0, 1, 24, 25, 30]


def test_a_partition_that_never_delivers_falls_idle_after_the_first_delivery() -> None:
    # no high watermark known: wall-clock idleness, counted from when fetching began
    order: EventTimeOrder[Item, Event] = EventTimeOrder(["i"], idle_seconds=5.0, partitions=[0, 1])
    order.add([ev("i", 0, 1.0, partition=0)], now=100.0)
    assert order.release(now=104.0) == []
    assert hours(order.release(now=105.0)) == [1]


def test_a_restored_input_slow_to_be_fetched_holds_the_horizon() -> None:
    """Issue 8: after a partition moved, its interactions were fetched seconds after its
    purchases; by the wall clock the interactions fell idle and a purchase was applied
    before an earlier consent change. An input restored at offset 40 waits until it
    delivers, or until a fetch reports nothing at or after 40."""
    highs: dict[tuple[str, int], int] = {}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=1.0, highwater=lambda t, p: highs.get((t, p)), partitions=[0]
    )
    order.starts_at("i", 0, 40)
    order.starts_at("p", 0, 7)
    order.add([ev("p", 7, 50.0)], now=0.0)
    highs[("p", 0)] = 8
    assert order.release(now=30.0) == []  # no fetch of "i" yet: never idle by the clock
    highs[("i", 0)] = 45
    assert order.release(now=31.0) == []  # "i" has offsets 40-44 to deliver
    order.add([ev("i", 40, 10.0)], now=32.0)
    assert hours(order.release(now=32.0)) == [10]  # "i" holds the horizon at 10 h
    order.add([ev("i", 44, 60.0)], now=33.0)
    assert hours(order.release(now=33.0)) == [50, 60]  # both caught up: all is in


def test_a_restored_input_with_nothing_left_is_idle_once_fetched() -> None:
    highs = {("i", 0): 40, ("p", 0): 8}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=1.0, highwater=lambda t, p: highs.get((t, p)), partitions=[0]
    )
    order.starts_at("i", 0, 40)
    order.add([ev("p", 7, 50.0)], now=0.0)
    assert hours(order.release(now=0.0)) == [50]


def test_pending_says_whether_the_broker_holds_more_than_was_delivered() -> None:
    """A task is quiet only when nothing is on its way (streams/task.py ``_quiet``)."""
    highs: dict[tuple[str, int], int] = {}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=1.0, highwater=lambda t, p: highs.get((t, p)), partitions=[0]
    )
    assert order.pending()  # nothing fetched yet: it cannot tell, so it counts as behind
    highs.update({("i", 0): 0, ("p", 0): 0})
    assert not order.pending()  # both partitions empty on the broker
    highs[("i", 0)] = 3
    assert order.pending()  # messages there, none delivered
    order.add([ev("i", 0, 1.0), ev("i", 1, 2.0)], now=0.0)
    assert order.pending()  # offset 2 still to come (and two events held)
    order.add([ev("i", 2, 3.0)], now=0.0)
    order.release(now=5.0)
    assert order.held == 0
    assert not order.pending()
    order.starts_at("p", 0, 10)  # restored at a commit the broker is past
    highs[("p", 0)] = 12
    assert order.pending()


def test_a_caught_up_input_is_passed_only_once_the_broker_confirms_it() -> None:
    """The scale-out run that found it: a restored task's interactions were caught up
    with the high watermark of their last fetch while a new part was being published;
    purchases fetched first brought events days ahead, the horizon passed the
    interactions, and the clock fired silence timers of members whose interactions
    came a moment later. Past a caught-up input's newest, an event goes (and the clock
    with it) only once the broker was asked that input's end after the event came."""
    highs = {("i", 0): 1, ("p", 0): 1}
    ends: dict[tuple[str, int], tuple[int, float]] = {("i", 0): (1, 0.5)}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"],
        idle_seconds=60.0,
        highwater=lambda t, p: highs[(t, p)],
        ends=lambda t, p: ends.get((t, p)),
    )
    order.add([ev("i", 0, 5.0)], now=0.0)
    order.add([ev("p", 0, 70.0)], now=1.0)  # i caught up: the horizon alone would be 70 h
    assert hours(order.release(now=1.2)) == [5]  # i's end was asked before 70 h came
    assert order.horizon_time(now=1.2) < T0 + timedelta(hours=70)  # nor does the clock
    highs[("i", 0)] = 2
    order.add([ev("i", 1, 12.0)], now=1.3)  # there was more: produced before, older
    assert hours(order.release(now=1.3)) == [12]
    ends[("i", 0)] = (2, 1.4)  # asked after 70 h came: i holds nothing more
    assert hours(order.release(now=1.5)) == [70]
    assert order.horizon_time(now=1.5) == T0 + timedelta(hours=70)
    assert order.held == 0 and order.gated == 2


def test_an_end_offset_beyond_the_deliveries_keeps_the_horizon_back() -> None:
    highs = {("i", 0): 1, ("p", 0): 1}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"],
        idle_seconds=60.0,
        highwater=lambda t, p: highs[(t, p)],
        ends=lambda t, p: (3, 9.0) if t == "i" else (1, 9.0),  # the broker: i has more
    )
    order.add([ev("i", 0, 5.0)], now=0.0)
    order.add([ev("p", 0, 70.0)], now=1.0)
    assert hours(order.release(now=2.0)) == [5] and order.held == 1


def test_an_input_that_delivered_nothing_of_a_backlog_holds_the_horizon() -> None:
    """Issue 8, found on the one-worker reference of the scale-out test under load: the
    whole stream was on the broker, the purchases of a partition had not been delivered
    5 s after its first interactions (a fetch full of interactions), the purchases fell
    idle by the wall clock and a consent withdrawal a month later was applied before
    that member's quote: the quote was withheld. An input the broker says holds messages
    is behind until it delivers, however long that takes (up to ``STALLED`` idle periods:
    a group whose offset is at the end already never delivers)."""
    highs = {("i", 0): 500, ("p", 0): 30}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=5.0, highwater=lambda t, p: highs[(t, p)], partitions=[0]
    )
    order.add([ev("i", n, 24.0 * n) for n in range(40)], now=0.0)
    assert order.release(now=30.0) == []  # the purchases' 30 messages are still to come
    order.add([ev("p", 0, 1.0)], now=31.0)
    assert hours(order.release(now=31.0)) == [0, 1]
    assert order.behind == 0
    stalled = STALLED * 5.0
    order2: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=5.0, highwater=lambda t, p: highs[(t, p)], partitions=[0]
    )
    order2.add([ev("i", 0, 1.0)], now=0.0)
    assert order2.release(now=stalled - 1) == []
    assert hours(order2.release(now=stalled)) == [1]


def test_an_input_of_an_empty_partition_is_caught_up_at_once() -> None:
    ends = {("i", 0): (3, 0.5), ("p", 0): (0, -1.0)}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=60.0, ends=lambda t, p: ends[(t, p)], partitions=[0]
    )
    order.add([ev("i", n, float(n)) for n in range(3)], now=0.0)
    # no fetch reported a high watermark yet: the end offsets stand in for it; "p" is
    # empty, but passed only once its end was asked after the events came
    assert order.release(now=0.1) == []
    ends[("p", 0)] = (0, 0.2)
    assert hours(order.release(now=0.3)) == [0, 1, 2]


def test_an_event_that_comes_after_the_horizon_passed_it_is_counted() -> None:
    order: EventTimeOrder[Item, Event] = EventTimeOrder(["i", "p"], idle_seconds=5.0)
    order.add([ev("i", 0, 10.0)], now=0.0)
    order.add([ev("p", 0, 11.0)], now=0.0)
    assert hours(order.release(now=0.0)) == [10]
    order.add([ev("i", 1, 12.0)], now=0.1)
    assert hours(order.release(now=0.1)) == [11]
    order.add([ev("p", 1, 10.5)], now=0.2)  # older than 11 h, released already
    assert order.behind == 1


def test_backlog_counts_what_the_broker_holds_beyond_each_delivery() -> None:
    """Issue 9: a task is live (short checkpoints, fresh rows) only with a small backlog."""
    highs: dict[tuple[str, int], int] = {("p", 0): 3}
    order: EventTimeOrder[Item, Event] = EventTimeOrder(
        ["i", "p"], idle_seconds=1.0, highwater=lambda t, p: highs.get((t, p)), partitions=[0]
    )
    assert order.backlog() is None  # "i" was never fetched: unknown, not live
    highs[("i", 0)] = 5_000
    assert order.backlog() == 5_003  # nothing delivered yet
    order.add([ev("i", 4_989, 1.0), ev("p", 1, 2.0)], now=0.0)
    assert order.backlog() == 10 + 1
    assert EventTimeOrder(["i"], idle_seconds=1.0).backlog() is None  # no watermarks at all
