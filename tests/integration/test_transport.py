"""PULSE_REPLICATION_FACTOR reaches the topics a worker creates (read back from the broker)."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from streams.app import INPUT_STREAMS, OUTPUT_TOPICS
from streams.broker import EmbeddedBroker
from streams.config import Settings
from streams.runtime import Runtime

pytestmark = pytest.mark.integration


def _replicas(bootstrap: str, topic: str) -> set[int]:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {len(p.replicas) for p in metadata.topics[topic].partitions.values()}


def test_a_worker_creates_its_topics_with_the_replication_factor(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    settings = settings.with_(replication_factor=3)
    runtime = Runtime(settings, serve_http=False, announce=False).start()
    runtime.stop()
    for name in (*INPUT_STREAMS, *OUTPUT_TOPICS):
        assert _replicas(broker.bootstrap, settings.topic(name)) == {3}, name


def test_a_worker_refuses_an_external_broker_without_the_key(settings: Settings) -> None:
    """Settings built in code (not from the environment) are checked at start too."""
    from streams.config import SettingsError

    with pytest.raises(SettingsError, match="PULSE_PSEUDONYM_KEY"):
        Runtime(settings.with_(pseudonym_key=""), serve_http=False, announce=False).start()


def test_starting_the_embedded_broker_prints_no_refused_connections(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The readiness probe waits out refused connections; librdkafka writes its own log
    lines straight to file descriptor 2, so they are looked for there."""
    broker = EmbeddedBroker().start()
    try:
        assert broker.pid is not None
    finally:
        broker.stop()
    err = capfd.readouterr().err
    assert "Connection refused" not in err and "|FAIL|" not in err, err
