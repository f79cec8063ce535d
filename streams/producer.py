"""The producer helper for upstream apps: validate, route by event type, key by member.

Usage: ``producer = PulseProducer("kafka:9092")``, then ``producer.send(event)`` per
event (a model or a dict) and ``producer.flush()`` before exiting.

Idempotent (``enable.idempotence``), ``acks=all``, keyed by ``member_id`` with
the murmur2 partitioner that Java clients and Faust use, so every event of a
member lands in the same partition of both input topics. Events are validated
before they leave the app: an invalid one raises the typed
:class:`~schemas.errors.EventRejected` at the caller, where it can be fixed.
``send_raw`` skips validation (backfills of files that may hold bad lines); a
message the broker refuses for what it is (too large, invalid) goes to its
``on_refused`` callback instead of failing the whole flush.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.envelope import EventBase
from schemas.errors import PulseError
from schemas.registry import decode_event, stream_of

__all__ = ["PulseProducer", "DeliveryFailed", "MessageRefused", "Refused", "is_refusal"]

#: Called with the Kafka error when the client or the broker refuses one message.
Refused = Callable[[KafkaError], None]

#: Errors about one message (its size or its content), not the broker or the connection.
REFUSAL_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.POLICY_VIOLATION,
        KafkaError._BAD_MSG,
    }
)
#: The refusals that are about size.
SIZE_CODES = frozenset(
    {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE}
)


def is_refusal(error: KafkaError) -> bool:
    """Whether ``error`` refuses one message for what it is (retrying it cannot help)."""
    return error.code() in REFUSAL_CODES


log = logging.getLogger(__name__)


class DeliveryFailed(PulseError):
    """The broker did not confirm some messages before the flush timeout."""


class MessageRefused(DeliveryFailed):
    """The client or the broker refused one message for what it is (e.g. over its size limit)."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(f"message refused: {error.name()}")
        self.error = error


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

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        on_refused: Refused | None = None,
    ) -> None:
        """Publish bytes as they are (no validation); Pulse will dead-letter what is invalid.

        A message the client or the broker refuses for what it is (see
        :func:`is_refusal`: over the size limit, invalid) is passed to ``on_refused``,
        now or when the broker answers; without a callback it raises
        :class:`MessageRefused` now, or fails the next :meth:`flush`.
        """
        self._produce(topic, key, value, partition, on_refused)

    def partitions(self, topic: str) -> int:
        """How many partitions ``topic`` has (from the broker's metadata)."""
        metadata = self._producer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise DeliveryFailed(f"no metadata for topic {topic}")
        return len(metadata.partitions)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        partition: int | None = None,
        on_refused: Refused | None = None,
    ) -> None:
        callback = self._delivered if on_refused is None else partial(self._answered, on_refused)
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=-1 if partition is None else partition,  # -1: the partitioner's
                    on_delivery=callback,
                )
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._producer.poll(0.1)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if not isinstance(error, KafkaError) or not is_refusal(error):
                    raise
                if on_refused is None:
                    raise MessageRefused(error) from None
                on_refused(error)
                break
        self._producer.poll(0)

    def _answered(self, on_refused: Refused, error: KafkaError | None, message: Message) -> None:
        if error is not None and is_refusal(error):
            on_refused(error)
            return
        self._delivered(error, message)

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
