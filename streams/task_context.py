"""What a partition task is given: the messages it consumes and what the worker shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scoring.alerts import RuleSet
from scoring.config import ScoringConfig
from sinks.clickhouse import ClickHouseSink, EventIdIndex
from sinks.privacy import Pseudonymizer
from sinks.sealing import Sealer
from streams.checkpoint_store import Checkpoints
from streams.erasure_feed import ErasureFeed
from streams.metrics import PulseMetrics
from streams.ordering import EndOffset, HighWater
from streams.outputs import OutputProducer

__all__ = ["Inbound", "TaskContext"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One consumed message, as the pipeline needs it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: float | None  # broker timestamp, seconds since the epoch
    ack: Callable[[], None]


@dataclass
class TaskContext:
    """What every task of a worker shares: built once by :func:`streams.runtime.build_worker`."""

    config: ScoringConfig
    rules: RuleSet
    inputs: tuple[str, ...]  # input topic names
    community_topic: str  # shares of community periods, keyed by community
    partitions: int  # of every input topic: the number of tasks
    scores_topic: str
    alerts_topic: str
    sink: ClickHouseSink
    index: EventIdIndex
    store: Checkpoints
    outputs: OutputProducer
    pseudonym: Pseudonymizer
    sealer: Sealer
    metrics: PulseMetrics
    clickhouse: Any  # clickhouse-connect client for roll-backs and erasures, not the sink's
    database: str
    bootstrap: str
    kafka_config: dict[str, Any]  # TLS/SASL of every Kafka client (streams.kafka_config)
    broker_id: str
    checkpoint_seconds: float
    idle_seconds: float
    max_held: int
    highwater: HighWater | None
    #: a task that received no event for this long, and whose inputs have nothing more
    #: (by the broker's high watermarks), stops holding community periods back; one that
    #: cannot tell (an input never fetched) does after ten times as long
    quiet_seconds: float = 60.0
    #: the checkpoint interval of a task that is live (not working through a backlog)
    live_checkpoint_seconds: float | None = None
    #: end offsets asked of the broker (streams.end_offsets): confirm a caught-up input
    ends: EndOffset | None = None
    #: where a task's erasures go once done, for other workers' ClickHouses (None: nowhere)
    erasure_feed: ErasureFeed | None = None
    #: what is failing and retried (e.g. a restore while ClickHouse is away) -> since when
    #: (wall-clock seconds): /healthz reports it
    failing: dict[str, float] = field(default_factory=dict)
