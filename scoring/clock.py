"""Event time: conversions, and the per-partition watermark that drives timers.

Inside the scoring package instants are float epoch seconds (UTC): cheap to
compare, exact in JSON. Aware datetimes appear only at the API edge.

>>> from datetime import datetime, UTC
>>> clock = PartitionClock(allowed_lateness=3600.0)
>>> clock.observe(to_ts(datetime(2026, 3, 1, 12, tzinfo=UTC)))
>>> from_ts(clock.watermark)
datetime.datetime(2026, 3, 1, 11, 0, tzinfo=datetime.timezone.utc)
>>> clock.observe(to_ts(datetime(2026, 3, 1, 6, tzinfo=UTC)))  # late: never moves back
>>> from_ts(clock.watermark).hour
11
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["DAY", "to_ts", "from_ts", "days", "PartitionClock"]

DAY = 86_400.0


def to_ts(moment: datetime) -> float:
    """Epoch seconds of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("event time must be timezone-aware")
    return moment.timestamp()


def from_ts(ts: float) -> datetime:
    """The aware UTC datetime of epoch seconds."""
    return datetime.fromtimestamp(ts, UTC)


def days(seconds: float) -> float:
    """Seconds expressed in days."""
    return seconds / DAY


class PartitionClock:
    """The event-time clock of one partition.

    The watermark is the largest event time seen minus the allowed lateness,
    raised further by explicit ticks, and never moves backwards.
    """

    __slots__ = ("allowed_lateness", "max_event_time", "watermark")

    def __init__(self, allowed_lateness: float) -> None:
        self.allowed_lateness = allowed_lateness
        self.max_event_time: float | None = None
        self.watermark: float | None = None

    def observe(self, event_time: float) -> None:
        """Account for an event's time."""
        if self.max_event_time is None or event_time > self.max_event_time:
            self.max_event_time = event_time
            self.tick(event_time - self.allowed_lateness)

    def tick(self, watermark: float) -> None:
        """Raise the watermark to ``watermark`` (ignored if it would go back)."""
        if self.watermark is None or watermark > self.watermark:
            self.watermark = watermark
