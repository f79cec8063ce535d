"""The producer helper for upstream apps: validate, route by event type, key by member.

Usage: ``producer = PulseProducer("kafka:9092")``, then ``producer.send(event)`` per
event (a model or a dict) and ``producer.flush()`` before exiting.

Idempotent (``enable.idempotence``), ``acks=all``, keyed by ``member_id`` with
the murmur2 partitioner that Java clients and Faust use, so every event of a
member lands in the same partition of both input topics. Events are validated
before they leave the app: an invalid one raises the typed
:class:`~schemas.errors.EventRejected` at the caller, where it can be fixed.
``send_raw`` skips validation (backfills of files that may hold bad lines).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from schemas.envelope import EventBase
from schemas.errors import PulseError
from schemas.registry import decode_event, stream_of

__all__ = ["PulseProducer", "DeliveryFailed"]

log = logging.getLogger(__name__)


class DeliveryFailed(PulseError):
    """The broker did not confirm some messages before the flush timeout."""


class PulseProducer:
    """Publishes Pulse events to the right topic, keyed by member."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic_prefix: str = "pulse.",
        config: Mapping[str, Any] | None = None,
        on_delivery: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.topic_prefix = topic_prefix
        self.on_delivery = on_delivery
        self.errors: list[str] = []
        self.delivered = 0
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "partitioner": "murmur2_random",
                "linger.ms": 20,
                "logger": log,
                **(config or {}),
            }
        )

    def topic_for(self, event_type: str) -> str:
        return f"{self.topic_prefix}{stream_of(event_type)}"

    def send(self, event: EventBase | Mapping[str, Any]) -> None:
        """Validate and publish one event (a model or a JSON-ready dict)."""
        if isinstance(event, EventBase):
            raw = event.model_dump_json().encode()
        else:
            raw = json.dumps(event, separators=(",", ":")).encode()
        parsed = decode_event(raw)
        self._produce(self.topic_for(parsed.event_type), parsed.member_id.encode(), raw)  # type: ignore[attr-defined]

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Publish bytes as they are (no validation); Pulse will dead-letter what is invalid."""
        self._produce(topic, key, value)

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors.append(str(error))
            return
        self.delivered += 1
        if self.on_delivery is not None:
            self.on_delivery(message.topic() or "", message.partition() or 0, message.offset() or 0)

    def close(self, timeout: float = 30.0) -> None:
        """Flush, then release the client (its connections close now, not at exit)."""
        self._producer.flush(timeout)
        del self._producer

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every message is confirmed; raise DeliveryFailed otherwise."""
        remaining = self._producer.flush(timeout)
        if remaining or self.errors:
            raise DeliveryFailed(f"{remaining} unconfirmed, errors: {self.errors[:3]}")
