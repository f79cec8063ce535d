"""Publishing files and simulations into Pulse, and knowing when they are fully processed.

"Fully processed" is decided from the pipeline's acknowledgements (rows stored
in ClickHouse) against the offsets the broker confirmed for our own writes,
never from broker watermarks (Tansu's are not reliable).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.errors import PulseError, UnknownEventType
from schemas.registry import stream_of
from streams.producer import PulseProducer

__all__ = ["Publisher", "PublishReport", "read_lines", "ReplayTimeout", "wait_until"]


class ReplayTimeout(PulseError):
    """The pipeline did not acknowledge everything that was published in time."""


@dataclass
class PublishReport:
    lines: int = 0
    published: int = 0
    # (topic, partition) -> highest offset the broker confirmed for our writes
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)


def read_lines(path: Path) -> Iterator[bytes]:
    """The non-empty lines of a JSONL file, as bytes, without their newline."""
    with path.open("rb") as handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def _route(line: bytes, prefix: str) -> tuple[str, bytes | None]:
    """Topic and key for a raw line; unreadable lines go to the interactions topic."""
    try:
        document: Any = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return f"{prefix}interactions", None
    if not isinstance(document, dict):
        return f"{prefix}interactions", None
    member = document.get("member_id")
    key = member.encode() if isinstance(member, str) else None
    try:
        return f"{prefix}{stream_of(str(document.get('event_type')))}", key
    except UnknownEventType:
        return f"{prefix}interactions", key


class Publisher:
    """Publishes raw lines or event dicts and remembers the offsets the broker confirmed."""

    def __init__(
        self, bootstrap: str, topic_prefix: str, *, config: Mapping[str, Any] | None = None
    ) -> None:
        """``config``: the client's TLS/SASL properties
        (:func:`streams.kafka_config.librdkafka_config`)."""
        self.prefix = topic_prefix
        self.report = PublishReport()
        self.producer = PulseProducer(
            bootstrap, topic_prefix=topic_prefix, config=config, on_delivery=self._delivered
        )

    def close(self) -> None:
        """Flush and let go of the producer (before the broker it talks to stops)."""
        self.producer.close()

    def _delivered(self, topic: str, partition: int, offset: int) -> None:
        tp = (topic, partition)
        if offset > self.report.last_offsets.get(tp, -1):
            self.report.last_offsets[tp] = offset

    def publish_lines(
        self, lines: Iterable[bytes], progress: Callable[[int], None] | None = None
    ) -> PublishReport:
        """Publish raw lines as they are: invalid ones are for the pipeline to dead-letter."""
        for line in lines:
            topic, key = _route(line, self.prefix)
            self.producer.send_raw(topic, key, line)
            self.report.lines += 1
            if progress is not None and self.report.lines % 10_000 == 0:
                progress(self.report.lines)
        self.producer.flush(120)
        self.report.published = self.producer.delivered
        return self.report

    def publish_events(
        self,
        events: Iterable[dict[str, Any]],
        *,
        speed: float | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> PublishReport:
        """Publish simulated events; with ``speed``, pace event time at ``speed`` x wall time."""
        wall_start = time.monotonic()
        sim_start: datetime | None = None
        for event in events:
            if should_stop():
                break
            if speed:
                at = datetime.fromisoformat(event["occurred_at"]).astimezone(UTC)
                sim_start = sim_start or at
                due = wall_start + (at - sim_start).total_seconds() / speed
                while (delay := due - time.monotonic()) > 0 and not should_stop():
                    self.producer._producer.poll(min(delay, 0.2))
            line = json.dumps(event, separators=(",", ":")).encode()
            topic, key = _route(line, self.prefix)
            self.producer.send_raw(topic, key, line)
            self.report.lines += 1
        self.producer.flush(120)
        self.report.published = self.producer.delivered
        return self.report


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.2,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """Bounded polling: return once ``condition()`` holds, raise ReplayTimeout after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ReplayTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        if on_tick is not None:
            on_tick()
        time.sleep(interval)
