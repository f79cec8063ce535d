"""The event-loop watch: work that does not await shows as the loop's lag."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from streams.loop_watch import LoopTurns, LoopWatch
from streams.metrics import PulseMetrics

pytestmark = pytest.mark.unit


def test_work_that_holds_the_loop_shows_as_its_lag() -> None:
    metrics = PulseMetrics(CollectorRegistry())
    watch = LoopWatch(metrics.event_loop_lag, period=0.02)

    async def scenario() -> None:
        watching = asyncio.create_task(watch.run())
        samples = metrics.registry.get_sample_value
        deadline = time.monotonic() + 10
        while (samples("pulse_event_loop_lag_seconds_count") or 0) < 2:  # the probe runs
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        time.sleep(0.3)  # work that holds the loop
        before = samples("pulse_event_loop_lag_seconds_count") or 0
        while (samples("pulse_event_loop_lag_seconds_count") or 0) <= before:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        watching.cancel()

    asyncio.run(scenario())
    samples = metrics.registry.get_sample_value
    assert 0.25 <= watch.max_lag < 5.0
    held = samples("pulse_event_loop_lag_seconds_bucket", {"le": "0.5"}) or 0
    below = samples("pulse_event_loop_lag_seconds_bucket", {"le": "0.25"}) or 0
    assert held - below == 1  # the one late wake-up


def test_turns_are_given_only_once_their_interval_passed() -> None:
    turns = LoopTurns(every=3600.0)

    async def steps() -> None:
        for _ in range(100):
            await turns.give()

    asyncio.run(steps())
    assert turns.given == 0  # an hour of work has not passed
    turns.every = 0.0
    asyncio.run(steps())
    assert turns.given == 100
