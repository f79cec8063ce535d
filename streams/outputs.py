"""Messages Pulse produces: scores, alerts and dead letters, each with its identity.

One librdkafka producer (batched in C, idempotent, ``acks=all``) serves every
task of a worker. Each output message carries headers naming what it is --
``pulse.output.id`` (the deterministic identity of :mod:`sinks.rows`, so a
consumer can de-duplicate), ``pulse.task``, ``pulse.gen``, ``pulse.seq`` (the
checkpoint that produced it). A checkpoint flushes the producer before anything
of it is acknowledged, and records per task the offset after its last delivered
message on every output topic-partition, so a new owner can find the messages of
a checkpoint that never committed (:func:`streams.checkpoint_store.produced_after`)
and skip producing them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.errors import PulseError
from sinks.rows import Tags
from streams.checkpoint_store import ID_HEADER, TASK_HEADER

__all__ = ["OutputProducer", "OutputError"]

log = logging.getLogger(__name__)


class OutputError(PulseError):
    """Output messages were not confirmed by the broker: nothing of them is acknowledged."""


class OutputProducer:
    """Produces output messages for the tasks of one worker."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.producer = Producer(
            {
                **config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                "message.max.bytes": 8 << 20,
                "logger": log,
            }
        )
        self._errors: list[str] = []
        # task -> "topic:partition" -> offset after its newest delivered message
        self.ends: dict[int, dict[str, int]] = {}
        # task -> output ids produced by checkpoints that never committed
        self.skip: dict[int, set[str]] = {}
        # "topic:partition" -> offset after the newest message without identity delivered
        self.plain_ends: dict[str, int] = {}
        # task -> its delivery callback, and (task, gen, seq) -> the checkpoint's headers
        self._callbacks: dict[int, Callable[[KafkaError | None, Message], None]] = {}
        self._tag_headers: tuple[Tags, list[tuple[str, bytes]]] | None = None

    def produced_through(self, topic: str) -> dict[int, int]:
        """Partition -> offset after the newest message this worker delivered to ``topic``."""
        ends: dict[int, int] = {}
        for where in (*self.ends.values(), self.plain_ends):
            for key, offset in where.items():
                name, _, partition = key.rpartition(":")
                if name == topic:
                    ends[int(partition)] = max(ends.get(int(partition), 0), offset)
        return ends

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        tags: Tags,
        identity: str,
        headers: Iterable[tuple[str, bytes]] = (),
        partition: int | None = None,
    ) -> bool:
        """Queue one message; False if a checkpoint that never committed produced it already."""
        if identity in self.skip.get(tags.task, ()):
            return False
        all_headers: list[tuple[str, str | bytes | None]] = [
            (ID_HEADER, identity.encode()),
            *self._checkpoint_headers(tags),
            *headers,
        ]
        delivered = self._callbacks.get(tags.task) or self._delivery(tags.task)
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self.producer.produce(
                    topic, value, key, headers=all_headers, on_delivery=delivered, **extra
                )
                return True
            except BufferError:  # librdkafka's queue is full: serve delivery reports first
                self.producer.poll(0.05)

    def _checkpoint_headers(self, tags: Tags) -> list[tuple[str, bytes]]:
        """The task, generation and sequence headers (the same for a whole checkpoint)."""
        cached = self._tag_headers
        if cached is None or cached[0] != tags:
            headers = [
                (TASK_HEADER, str(tags.task).encode()),
                ("pulse.gen", str(tags.gen).encode()),
                ("pulse.seq", str(tags.seq).encode()),
            ]
            cached = self._tag_headers = (tags, headers)
        return cached[1]

    def _delivery(self, task: int) -> Callable[[KafkaError | None, Message], None]:
        """The delivery report of the task's messages: the newest offset per partition."""
        ends = self.ends.setdefault(task, {})

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self._errors.append(str(error))
                return
            where = f"{message.topic()}:{message.partition()}"
            offset = (message.offset() or 0) + 1
            if offset > ends.get(where, 0):
                ends[where] = offset

        self._callbacks[task] = delivered
        return delivered

    def produce_plain(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, str | bytes | None]],
        *,
        partition: int | None = None,
    ) -> None:
        """Queue a message without identity (dead letters: keyed by their source offset;
        watermarks: to an explicit ``partition``)."""
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        plain = self.plain_ends

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                self._errors.append(str(error))
                return
            where = f"{message.topic()}:{message.partition()}"
            plain[where] = max(plain.get(where, 0), (message.offset() or 0) + 1)

        while True:
            try:
                self.producer.produce(
                    topic, value, key, headers=headers, on_delivery=delivered, **extra
                )
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:  # e.g. larger than the topic takes
                self._errors.append(str(exc))
                return

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait until every queued message is confirmed; raise :class:`OutputError` if not."""
        remaining = await asyncio.to_thread(self.producer.flush, timeout)
        if remaining or self._errors:
            errors, self._errors = self._errors[:3], []
            raise OutputError(f"{remaining} output messages unconfirmed; errors: {errors}")

    def close(self, timeout: float = 10.0) -> None:
        """Flush, then release the client (its connections close now, not at exit)."""
        self.producer.flush(timeout)
        self.producer = None  # type: ignore[assignment]
