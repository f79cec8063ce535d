"""Shared fixtures: the real Tansu broker, the real ClickHouse engine, fresh names per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.config import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real Tansu broker for the session, on a free loopback port, stopped by PID."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """chDB hosts one engine path per process: every in-process test shares this one."""
    return tmp_path_factory.mktemp("pulse-data")


@pytest.fixture
def settings(broker: EmbeddedBroker, data_dir: Path) -> Settings:
    """Settings with a fresh topic prefix, consumer group and ClickHouse database."""
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=f"t{suffix}.",
        app_id=f"pulse-test-{suffix}",
        clickhouse_database=f"pulse_{suffix}",
        data_dir=str(data_dir),
        partitions=2,
        sink_flush_seconds=0.2,
        metrics_port=0,
        pseudonym_key="test-key-" + "0" * 24,
        rebalance_timeout_seconds=2.0,
        input_idle_seconds=1.0,
    )
