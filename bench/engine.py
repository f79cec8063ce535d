"""In-process cost of each stage per event, with ratios to a baseline measured in the same run.

The baseline is the cost of decoding and validating one event (``schemas.decode_event``):
every other figure is printed as a multiple of it, so runs on different machines compare.
No broker, no ClickHouse: this is the scoring engine alone (figure ``engine``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.envelope import EventBase
from schemas.registry import decode_event, stream_of
from scoring.engine import ScoringEngine
from streams.ordering import EventTimeOrder


@dataclass(frozen=True)
class _Delivered:
    topic: str
    partition: int
    offset: int


def _per_event(label: str, n: int, run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    per = seconds / n * 1e6
    print(
        f"    {label:<44} {n:>8,} events  {seconds:7.2f}s  {per:8.1f} us/event  "
        f"{n / seconds:10,.0f}/s",
        flush=True,
    )
    return per


def engine_figures(lines: list[bytes]) -> dict[str, Any]:
    """Decode, score, skip replays and reorder ``lines`` in-process; microseconds per event."""
    n = len(lines)
    now = datetime(2100, 1, 1, tzinfo=UTC)
    events: list[EventBase] = []
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
        topic = "p" if stream_of(e.event_type) == "purchases" else "i"  # type: ignore[attr-defined]
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
    print(f"    model checkpoint: {len(blob):,} bytes in {ckpt_ms:.1f} ms", flush=True)
    print(
        f"    ratios to baseline: scoring {score / base:.1f}x, idempotent skip {dup / base:.2f}x, "
        f"event-time order {hold / base:.2f}x",
        flush=True,
    )
    return {
        "events": n,
        "decode_us_per_event": round(base, 1),
        "engine_us_per_event": round(score, 1),
        "replayed_skip_us_per_event": round(dup, 1),
        "event_time_order_us_per_event": round(hold, 1),
        "models_checkpoint_bytes": len(blob),
        "models_checkpoint_ms": round(ckpt_ms, 1),
    }
