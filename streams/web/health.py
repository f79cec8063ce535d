"""``/healthz``: is the worker doing its job? Three facts decide, each with a reason.

The worker is unhealthy when its ingest agent crashed (a bug: the batch stays
uncommitted), when ClickHouse inserts have failed for longer than
``PULSE_HEALTH_SINK_FAILURE_SECONDS`` without a success, or when its consumer
stopped. Reasons name the failure and never carry an exception's message (it may
hold data).

>>> healthy = assess(HealthFacts(None, None, True, now=100.0), sink_failure_seconds=60)
>>> healthy.ok, healthy.reasons
(True, ())
>>> sick = assess(HealthFacts(KeyError("m-1"), 20.0, True, now=100.0), sink_failure_seconds=60)
>>> for reason in sick.reasons:
...     print(reason)
ingest agent crashed (KeyError); its batch stays uncommitted
ClickHouse inserts failing for 80s (threshold 60s)
>>> assess(HealthFacts(None, 90.0, False, now=100.0), sink_failure_seconds=60).reasons
('consumer stopped: the Faust worker is not running',)
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.web.deps import Health

__all__ = ["HealthFacts", "assess"]


@dataclass(frozen=True)
class HealthFacts:
    """What the worker reports: the agent's crash, when the sink started failing
    (wall-clock seconds, None while it succeeds), whether the consumer runs."""

    agent_crashed: BaseException | None
    sink_failing_since: float | None
    consumer_running: bool
    now: float
    #: a partition task held by a failing restore (ClickHouse or the broker away): since when
    restore_failing_since: float | None = None


def assess(facts: HealthFacts, *, sink_failure_seconds: float) -> Health:
    """The worker's :class:`Health` from ``facts``."""
    reasons: list[str] = []
    if facts.agent_crashed is not None:
        name = type(facts.agent_crashed).__name__
        reasons.append(f"ingest agent crashed ({name}); its batch stays uncommitted")
    failing_for = 0.0
    if facts.sink_failing_since is not None:
        failing_for = max(0.0, facts.now - facts.sink_failing_since)
        if failing_for > sink_failure_seconds:
            reasons.append(
                f"ClickHouse inserts failing for {failing_for:.0f}s "
                f"(threshold {sink_failure_seconds:.0f}s)"
            )
    if facts.restore_failing_since is not None:
        held_for = max(0.0, facts.now - facts.restore_failing_since)
        if held_for > sink_failure_seconds:
            reasons.append(
                f"partition restore failing for {held_for:.0f}s "
                f"(threshold {sink_failure_seconds:.0f}s): its events wait"
            )
    if not facts.consumer_running:
        reasons.append("consumer stopped: the Faust worker is not running")
    checks = {
        "ingest_agent": "crashed" if facts.agent_crashed is not None else "ok",
        "sink_failing_seconds": round(failing_for, 1),
        "consumer": "running" if facts.consumer_running else "stopped",
    }
    return Health(tuple(reasons), checks)
