"""How long work holds a worker's event loop, and handing it back during long work.

A worker runs on one event loop everything but Kafka's consumer (Faust keeps that in a
thread of its own, heartbeats included): Faust's delivery of fetched messages to the
agent, its offset commits and partition checks, the ingest agent, the 1 s tick, the
sink's scheduling and acknowledgements, the producer of the state changelog. A stretch
of work that never awaits -- a horizon that releases thousands of held events, a clock
that fires a backlog of silence timers, the daily batch of every member of a task, the
seal of a checkpoint -- holds all of them back: offsets are committed late, Faust's
timers log that they overlap, nothing new is fetched into the agent's buffer.

:class:`LoopWatch` measures it: a probe asks to wake every ``period`` seconds, and how
late it wakes is the loop's lag (``pulse_event_loop_lag_seconds``; the largest in
``pulse status``). :class:`LoopTurns` bounds it: long work calls :meth:`LoopTurns.give`
between its steps, which lets the loop run once whenever ``every`` seconds passed since
it last did. The work keeps what it holds (the pipeline's lock), so a turn runs only
what does not touch the tasks.

>>> import asyncio
>>> turns = LoopTurns(every=0.0)  # a turn between every two steps
>>> async def steps() -> int:
...     for _ in range(3):
...         await turns.give()
...     return turns.given
>>> asyncio.run(steps())
3
"""

from __future__ import annotations

import asyncio
import time

from prometheus_client import Histogram

__all__ = ["LoopTurns", "LoopWatch", "TURN_SECONDS"]

#: Longest stretch of work between two turns of the event loop.
TURN_SECONDS = 0.02


class LoopTurns:
    """Lets the event loop run at least every ``every`` seconds of long work."""

    def __init__(self, every: float = TURN_SECONDS) -> None:
        self.every = every
        self.given = 0  # turns handed to the loop
        self._last = time.perf_counter()

    async def give(self) -> None:
        """Let the loop run once if ``every`` seconds passed since it last did here."""
        if time.perf_counter() - self._last >= self.every:
            await asyncio.sleep(0)
            self.given += 1
            self._last = time.perf_counter()


class LoopWatch:
    """The lag of the event loop it runs on, observed every ``period`` seconds."""

    def __init__(self, histogram: Histogram, period: float = 0.25) -> None:
        self.histogram = histogram
        self.period = period
        self.max_lag = 0.0  # seconds: the longest the loop was late

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period
            await asyncio.sleep(self.period)
            lag = max(0.0, loop.time() - due)
            self.histogram.observe(lag)
            self.max_lag = max(self.max_lag, lag)
