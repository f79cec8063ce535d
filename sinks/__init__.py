"""Where Pulse's records land: ClickHouse (embedded chDB or a server), batched and idempotent."""

from __future__ import annotations

from sinks.base import Ack, NullObserver, Row, SinkObserver
from sinks.clickhouse import ClickHouseSink, EventIdIndex, connect
from sinks.erasure import MEMBER_TABLES, erase_member
from sinks.errors import ErasureError, FlushFailed, MigrationError, SinkError
from sinks.migrations import MIGRATIONS, TABLES, apply_migrations
from sinks.privacy import Pseudonymizer, load_or_create_key

__all__ = [
    "Ack",
    "Row",
    "SinkObserver",
    "NullObserver",
    "ClickHouseSink",
    "EventIdIndex",
    "connect",
    "SinkError",
    "FlushFailed",
    "MigrationError",
    "ErasureError",
    "erase_member",
    "MEMBER_TABLES",
    "MIGRATIONS",
    "TABLES",
    "apply_migrations",
    "Pseudonymizer",
    "load_or_create_key",
]
