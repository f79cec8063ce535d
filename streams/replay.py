"""Publishing files and simulations into Pulse, and knowing when they are fully processed.

"Fully processed" is decided from the pipeline's acknowledgements (rows stored
in ClickHouse) against the offsets the broker confirmed for our own writes,
never from broker watermarks (Tansu's are not reliable).

Every line ends stored or failed, whatever it holds. Routing never fails (an
unreadable line goes to the interactions topic, for the pipeline to reject).
A line the broker refuses (over its message size limit, or invalid for it)
never reaches the pipeline: the publisher keeps its ``failed_events`` row
(reason ``oversize``, or ``broker_rejected``; shape and hash only, the line
number as ``source_offset``) and :func:`store_refused` inserts the rows not
recorded before, so replaying a file twice records each refused line once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaError

from schemas.errors import EventRejected, PulseError, UnknownEventType
from schemas.registry import read_object, stream_of
from sinks.privacy import Pseudonymizer
from sinks.rows import UNTAGGED, failed_row
from streams.producer import SIZE_CODES, PulseProducer

__all__ = [
    "Publisher",
    "PublishReport",
    "RefusedLine",
    "read_lines",
    "numbered_lines",
    "store_refused",
    "ReplayTimeout",
    "wait_until",
]

#: ``failed_events.reason`` of a line the broker refused for another reason than its size.
BROKER_REJECTED = "broker_rejected"
#: Longest member id used as a key (a valid one has at most 128 characters).
_MAX_KEY_CHARS = 1024
#: Stands in when no pseudonymizer is given: never called, refused rows then carry no key.
_NO_KEYS = Pseudonymizer(secrets.token_bytes(32))


class ReplayTimeout(PulseError):
    """The pipeline did not acknowledge everything that was published in time."""


@dataclass(frozen=True)
class RefusedLine:
    """A line the broker refused: where it is in the file, why, and its failure row."""

    number: int
    reason: str  # oversize or broker_rejected
    error: str  # the Kafka error's name, e.g. MSG_SIZE_TOO_LARGE
    row: dict[str, Any]  # its failed_events row


@dataclass
class PublishReport:
    lines: int = 0
    published: int = 0
    # (topic, partition) -> highest offset the broker confirmed for our writes
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    refused: list[RefusedLine] = field(default_factory=list)


def numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """The non-empty lines of a JSONL file with their line numbers (from 1), without newline."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield number, line


def read_lines(path: Path) -> Iterator[bytes]:
    """The non-empty lines of a JSONL file, as bytes, without their newline."""
    for _, line in numbered_lines(path):
        yield line


def _route(line: bytes, prefix: str) -> tuple[str, bytes | None]:
    """Topic and key for a raw line, whatever it holds; unreadable lines go to interactions.

    >>> _route(b'{"event_type": "policy_lapsed", "member_id": "m-1"}', "p.")
    ('p.purchases', b'm-1')
    >>> _route(b"[" * 100_000, "p.")
    ('p.interactions', None)
    """
    try:
        document = read_object(line)
    except EventRejected:
        return f"{prefix}interactions", None
    member = document.get("member_id")
    key = None
    if isinstance(member, str) and len(member) <= _MAX_KEY_CHARS:
        key = member.encode("utf-8", "replace")
    event_type = document.get("event_type")
    try:
        return f"{prefix}{stream_of(event_type if isinstance(event_type, str) else '')}", key
    except UnknownEventType:
        return f"{prefix}interactions", key


class Publisher:
    """Publishes raw lines or event dicts and remembers the offsets the broker confirmed."""

    def __init__(
        self,
        bootstrap: str,
        topic_prefix: str,
        pseudonym: Pseudonymizer | None = None,
        *,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """``config``: the client's TLS/SASL properties
        (:func:`streams.kafka_config.librdkafka_config`)."""
        self.prefix = topic_prefix
        self.pseudonym = pseudonym
        self.report = PublishReport()
        self.producer = PulseProducer(
            bootstrap, topic_prefix=topic_prefix, config=config, on_delivery=self._delivered
        )
        self._partitions: dict[str, int] = {}

    def close(self) -> None:
        """Flush and let go of the producer (before the broker it talks to stops)."""
        self.producer.close()

    def _delivered(self, topic: str, partition: int, offset: int) -> None:
        tp = (topic, partition)
        if offset > self.report.last_offsets.get(tp, -1):
            self.report.last_offsets[tp] = offset

    def publish_lines(
        self,
        lines: Iterable[bytes] | Iterable[tuple[int, bytes]],
        progress: Callable[[int], None] | None = None,
    ) -> PublishReport:
        """Publish raw lines as they are: invalid ones are for the pipeline to dead-letter.

        ``lines`` are bytes, or (line number, bytes) pairs (see :func:`numbered_lines`).
        A line without a key goes to a partition chosen by its content, so a replay
        of the same file into fresh topics gives every line the same offset.
        Lines the broker refuses are in the report's ``refused``.
        """
        for item in lines:
            number, line = item if isinstance(item, tuple) else (self.report.lines + 1, item)
            topic, key = _route(line, self.prefix)
            partition = None if key is not None else zlib.crc32(line) % self._count(topic)
            self.producer.send_raw(
                topic,
                key,
                line,
                partition=partition,
                on_refused=partial(self._refused, number, topic, key, line),
            )
            self.report.lines += 1
            if progress is not None and self.report.lines % 10_000 == 0:
                progress(self.report.lines)
        self.producer.flush(120)
        self.report.published = self.producer.delivered
        return self.report

    def _count(self, topic: str) -> int:
        if topic not in self._partitions:
            self._partitions[topic] = self.producer.partitions(topic)
        return self._partitions[topic]

    def _refused(
        self, number: int, topic: str, key: bytes | None, line: bytes, error: KafkaError
    ) -> None:
        reason = "oversize" if error.code() in SIZE_CODES else BROKER_REJECTED
        row = failed_row(
            line,
            key=key if self.pseudonym is not None else None,
            topic=topic,
            partition=0,
            offset=number,
            reason=reason,
            error_class=error.name(),
            detail=(
                f"refused by the broker ({error.name()}): line {number} of the replayed "
                f"file, {len(line):,} bytes; never published"
            ),
            pseudonym=self.pseudonym or _NO_KEYS,
            failed_at=datetime.now(UTC),
            tags=UNTAGGED,
        )
        self.report.refused.append(RefusedLine(number, reason, error.name(), row))

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


def store_refused(client: Client, database: str, refused: Sequence[RefusedLine]) -> int:
    """Insert the ``failed_events`` rows of refused lines not recorded yet; return how many.

    A refused line is recorded once per payload and reason: rows whose
    (reason, payload_sha256) is already in ``failed_events`` (a previous replay
    of the same file) or earlier in ``refused`` (the same line twice) are skipped.
    """
    if not refused:
        return 0
    hashes = sorted({line.row["payload_sha256"] for line in refused})
    known: set[tuple[str, str]] = set()
    for start in range(0, len(hashes), 2000):
        result = client.query(
            f"SELECT reason, payload_sha256 FROM {database}.failed_events "
            "WHERE payload_sha256 IN {hashes:Array(String)}",
            parameters={"hashes": hashes[start : start + 2000]},
        )
        known.update((str(reason), str(sha)) for reason, sha in result.result_rows)
    rows: list[dict[str, Any]] = []
    for line in refused:
        identity = (line.reason, line.row["payload_sha256"])
        if identity not in known:
            known.add(identity)
            rows.append(line.row)
    if rows:
        columns = list(rows[0])
        token = hashlib.sha256("".join(r["payload_sha256"] for r in rows).encode()).hexdigest()
        client.insert(
            f"{database}.failed_events",
            [[row[c] for c in columns] for row in rows],
            column_names=columns,
            settings={"insert_deduplication_token": f"refused-{token}"},
        )
    return len(rows)


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
