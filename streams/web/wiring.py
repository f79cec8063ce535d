"""Builds the :class:`WebDeps` of today's :class:`streams.runtime.Runtime`.

The one module of :mod:`streams.web` that knows the runtime's attributes, so the
core can change behind it: a new core rewrites this function (or builds a
``WebDeps`` itself) and the web app stays as it is.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from clickhouse_connect.driver.client import Client

from sinks.clickhouse import connect
from streams.config import Settings
from streams.kafka_config import librdkafka_config
from streams.web.deps import Health, WebDeps, never_suppressed, no_local_member
from streams.web.health import HealthFacts, assess

if TYPE_CHECKING:
    from streams.runtime import Runtime

__all__ = ["web_deps", "query_limits", "ReadPool"]


def query_limits(settings: Settings) -> dict[str, Any]:
    """ClickHouse settings of the ``/query`` client: the ``PULSE_QUERY_MAX_*`` limits.

    >>> query_limits(Settings())["max_execution_time"], query_limits(Settings())["max_result_rows"]
    (10.0, 100000)
    """
    return {
        "max_execution_time": settings.query_max_execution_seconds,
        "timeout_overflow_mode": "throw",
        "max_memory_usage": settings.query_max_memory_bytes,
        "max_result_rows": settings.query_max_result_rows,
        "result_overflow_mode": "throw",
    }


class ReadPool:
    """A few read-only clients shared by the web app's own reads (one query per client
    at a time: the chDB client serialises its calls)."""

    def __init__(self, make: Callable[[], Client], size: int = 3) -> None:
        self._free: queue.Queue[Client] = queue.Queue()
        for _ in range(size):
            self._free.put(make())

    def select(self, sql: str, parameters: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
        client = self._free.get()
        try:
            result = client.query(sql, parameters=dict(parameters))
        finally:
            self._free.put(client)
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]


def _consumer_running(runtime: Runtime) -> bool:
    thread = runtime.thread
    if thread is None or not thread.is_alive() or not thread.loop.is_running():
        return False
    return runtime.faust.consumer_running()


def _restore_failing_since(runtime: Runtime) -> float | None:
    failing = runtime.pipeline.ctx.failing if runtime.pipeline is not None else {}
    return min(failing.values(), default=None)


def _health(runtime: Runtime) -> Health:
    sink = runtime.pipeline.sink if runtime.pipeline is not None else None
    facts = HealthFacts(
        agent_crashed=runtime.faust.crashed,
        sink_failing_since=sink.failing_since if sink is not None else None,
        consumer_running=_consumer_running(runtime),
        now=time.time(),
        restore_failing_since=_restore_failing_since(runtime),
    )
    return assess(facts, sink_failure_seconds=runtime.settings.health_sink_failure_seconds)


def web_deps(
    runtime: Runtime,
    *,
    local_member: Callable[[str], dict[str, Any] | None] = no_local_member,
    suppressed: Callable[[str], bool] = never_suppressed,
) -> WebDeps:
    """The web app's dependencies, from a started runtime (ClickHouse migrated)."""
    s = runtime.settings
    limits = query_limits(s)
    reader = connect(
        s.clickhouse_url, s.clickhouse_database, s.data_path, readonly=True, limits=limits
    )

    def query(sql: str, fmt: str) -> bytes:
        result: bytes = reader.raw_query(sql, fmt=fmt)
        return result

    # Pulse's own reads (member API, live page) have fixed bounds, not the user's row limit.
    app_limits = {**limits, "max_execution_time": 5.0, "max_result_rows": 10_000}
    pool = ReadPool(
        lambda: connect(
            s.clickhouse_url, s.clickhouse_database, s.data_path, readonly=True, limits=app_limits
        )
    )
    return WebDeps(
        settings=s,
        registry=runtime.metrics.registry,
        status=runtime.status,
        health=lambda: _health(runtime),
        query=query,
        select=pool.select,
        pseudonym=runtime.pseudonym,
        producer_config={"bootstrap.servers": runtime.bootstrap, **librdkafka_config(s)},
        local_member=local_member,
        suppressed=suppressed,
    )
