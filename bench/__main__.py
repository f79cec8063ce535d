"""Benchmarks: per-event cost of each stage, with ratios to a baseline measured in the same run.

The baseline is the cost of decoding and validating one event (``schemas.decode_event``):
every other figure is printed as a multiple of it, so runs on different machines compare.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from schemas.envelope import EventBase
from schemas.registry import decode_event, stream_of
from scoring.engine import ScoringEngine
from streams.ordering import EventTimeOrder
from streams.simulator import SimulationConfig, simulate


@dataclass(frozen=True)
class _Delivered:
    topic: str
    partition: int
    offset: int


def _per_event(label: str, n: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    per = seconds / n * 1e6
    print(
        f"{label:<44} {n:>8,} events  {seconds:7.2f}s  {per:8.1f} us/event  {n / seconds:10,.0f}/s"
    )
    return per


def main() -> None:
    config = SimulationConfig(
        members=2000, days=120, seed=7, start=datetime(2026, 1, 1, tzinfo=UTC)
    )
    lines = [json.dumps(e, separators=(",", ":")).encode() for e in simulate(config)]
    n = len(lines)
    now = datetime(2027, 1, 1, tzinfo=UTC)
    print(f"community: {config.members:,} members, {config.days} days, {n:,} events\n")
    events = []
    base = _per_event(
        "baseline: decode + validate",
        n,
        lambda: events.extend(decode_event(x, now=now) for x in lines),
    )
    engine = ScoringEngine()
    score = _per_event(
        "scoring: state + scores + learning", n, lambda: [engine.process(e) for e in events]
    )
    again = ScoringEngine()
    for e in events[: n // 2]:
        again.process(e)
    dup = _per_event(
        "scoring: replayed events (idempotent skip)",
        n // 2,
        lambda: [again.process(e) for e in events[: n // 2]],
    )
    order: EventTimeOrder[_Delivered, EventBase] = EventTimeOrder(["i", "p"], idle_seconds=5.0)
    offsets = {"i": 0, "p": 0}
    delivered = []
    for e in events:  # interactions and purchases as two inputs, as the pipeline sees them
        topic = "p" if stream_of(e.event_type) == "purchases" else "i"
        offsets[topic] += 1
        delivered.append((_Delivered(topic, 0, offsets[topic]), e))
    # purchases delivered first, far ahead: the worst case, every one of them held
    delivered.sort(key=lambda d: d[0].topic != "p")

    def reorder() -> None:
        for start in range(0, n, 500):
            order.add(delivered[start : start + 500], now=0.0)
            order.release(now=0.0)

    hold = _per_event("event-time order: hold + release", n, reorder)
    started = time.perf_counter()
    blob = engine.models_checkpoint()
    ckpt_ms = (time.perf_counter() - started) * 1e3
    print(f"\nmodel checkpoint: {len(blob):,} bytes in {ckpt_ms:.1f} ms")
    print(
        f"ratios to baseline: scoring {score / base:.1f}x, idempotent skip {dup / base:.2f}x, "
        f"event-time order {hold / base:.2f}x"
    )


if __name__ == "__main__":
    main()
