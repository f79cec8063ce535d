"""One running Pulse worker with everything it needs, started and stopped as a unit.

:class:`Runtime` starts, in order: the embedded broker (if no bootstrap is
configured) and the topics; ClickHouse (chDB or a server) and its
migrations; the pipeline; the Faust worker in a background thread with its
own event loop; the HTTP endpoint. ``stop()`` drains the sink (so every
processed message is stored and acknowledged), stops Faust (which commits),
then stops what it started, by PID.

The CLI (``pulse up``, ``pulse replay``, ``pulse worker``) and the integration
tests use this same class.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from schemas.errors import PulseError
from schemas.registry import StreamName
from sinks.clickhouse import ClickHouseSink, EventIdIndex, connect
from sinks.migrations import apply_migrations
from sinks.privacy import Pseudonymizer, load_or_create_key
from streams.app import INPUT_STREAMS, OUTPUT_TOPICS, PulseApp
from streams.broker import EmbeddedBroker, ensure_topics, wait_for_broker
from streams.config import Settings
from streams.metrics import PulseMetrics
from streams.pipeline import Pipeline, Scorer
from streams.web import WebServer, create_app
from streams.web.wiring import web_deps

__all__ = ["Runtime", "MetricsObserver", "instance_file", "read_instance"]

log = logging.getLogger(__name__)

ScorerFactory = Callable[["Runtime"], Scorer]


class MetricsObserver:
    """Reports sink activity to Prometheus metrics."""

    def __init__(self, metrics: PulseMetrics) -> None:
        self.m = metrics

    def flushed(self, table: str, rows: int) -> None:
        self.m.sink_rows.labels(table).inc(rows)
        self.m.sink_last_success.set(time.time())

    def flush_duration(self, seconds: float) -> None:
        self.m.sink_flush_duration.observe(seconds)

    def failed(self, table: str, error: BaseException) -> None:
        self.m.sink_errors.labels(table, type(error).__name__).inc()

    def retried(self) -> None:
        self.m.sink_retries.inc()

    def backlog(self, rows: int) -> None:
        self.m.sink_backlog_rows.set(rows)


class _QuietWorker(faust.Worker):
    """A Faust worker that leaves signals to the process's main thread."""

    def install_signal_handlers(self) -> None:
        pass


class _WorkerThread(threading.Thread):
    def __init__(self, app: faust.App, loglevel: str) -> None:
        super().__init__(name="pulse-faust", daemon=True)
        self.app = app
        self.loglevel = loglevel
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.worker: faust.Worker | None = None

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.worker = _QuietWorker(
                self.app,
                loop=self.loop,
                loglevel=self.loglevel,
                quiet=True,
                override_logging=False,
                redirect_stdouts=False,
                daemon=False,
            )
            self.loop.run_until_complete(self.worker.start())
            self.started.set()
            self.loop.run_forever()
        except BaseException as exc:  # reported to the thread that waits on `started`
            self.error = exc
            self.started.set()
        finally:
            self.loop.close()

    def shutdown(self, before_stop: Callable[[], Any] | None, timeout: float) -> None:
        async def _stop() -> None:
            if before_stop is not None:
                await before_stop()
            if self.worker is not None:
                await self.worker.stop()
            self.loop.stop()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(_stop(), self.loop)
        self.join(timeout)


def instance_file(settings: Settings) -> Path:
    """Where a running worker announces itself (pid, endpoints) for ``pulse query``."""
    return settings.data_path / "instance.json"


def read_instance(settings: Settings) -> dict[str, Any] | None:
    """The running worker's announcement, if its process is alive."""
    path = instance_file(settings)
    try:
        info: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return info


class Runtime:
    """A Pulse worker and the components it depends on."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        scorer: ScorerFactory | None = None,
        serve_http: bool = True,
        announce: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = PulseMetrics(registry)
        self.scorer_factory = scorer
        self.serve_http = serve_http
        self.announce = announce
        self.broker: EmbeddedBroker | None = None
        self.http: WebServer | None = None
        self.thread: _WorkerThread | None = None
        self.pipeline: Pipeline | None = None
        self.scorer: Scorer | None = None
        self.bootstrap = settings.kafka_bootstrap
        self.started_at = time.time()

    # --- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Runtime:
        s = self.settings
        s.data_path.mkdir(parents=True, exist_ok=True)
        if s.embedded_kafka:
            self.broker = EmbeddedBroker(log_path=s.data_path / "tansu.log").start()
            self.bootstrap = self.broker.bootstrap
        else:
            wait_for_broker(self.bootstrap)
        topics = [s.topic(n) for n in (*INPUT_STREAMS, *OUTPUT_TOPICS)]
        ensure_topics(self.bootstrap, topics, s.partitions)

        self.clickhouse = connect(s.clickhouse_url, None, s.data_path)
        apply_migrations(self.clickhouse, s.clickhouse_database)
        self.reader = connect(s.clickhouse_url, s.clickhouse_database, s.data_path, readonly=True)
        self.pseudonym_key = load_or_create_key(s.pseudonym_key, s.data_path)
        self.pseudonym = Pseudonymizer(self.pseudonym_key)
        self.faust = PulseApp(s, self.bootstrap)
        sink = ClickHouseSink(
            self.clickhouse,
            s.clickhouse_database,
            batch_rows=s.sink_batch_rows,
            flush_seconds=s.sink_flush_seconds,
            max_backlog_rows=s.sink_max_backlog_rows,
            retry_max_seconds=s.sink_retry_max_seconds,
            observer=MetricsObserver(self.metrics),
        )
        index = EventIdIndex(connect(s.clickhouse_url, None, s.data_path), s.clickhouse_database)
        streams: dict[str, StreamName] = {s.topic(n): n for n in INPUT_STREAMS}  # type: ignore[misc]
        self.pipeline = Pipeline(
            sink=sink,
            index=index,
            pseudonym=self.pseudonym,
            metrics=self.metrics,
            dead_letter=self.faust.publish_dead_letter,
            streams=streams,
            max_event_bytes=s.max_event_bytes,
            max_future_skew=timedelta(seconds=s.max_future_skew_seconds),
            idle_seconds=s.input_idle_seconds,
            max_held=s.max_held_events,
            highwater=self.faust.highwater,
            partitions=s.partitions,
        )
        if self.scorer_factory is not None:
            self.scorer = self.scorer_factory(self)
            self.pipeline.scorer = self.scorer
        self.faust.pipeline = self.pipeline
        self.metrics.build_info.info(
            {"version": "0.1.0", "kafka": "embedded" if self.broker else "external"}
        )

        self.thread = _WorkerThread(self.faust.app, s.log_level)
        self.thread.start()
        if not self.thread.started.wait(timeout) or self.thread.error is not None:
            error = self.thread.error
            self.stop()
            raise RuntimeError(f"the Faust worker did not start: {error!r}")
        if self.serve_http:
            app = create_app(web_deps(self))
            self.http = WebServer(app, s.metrics_host, s.metrics_port).start()
        if self.announce:
            self._announce()
        return self

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Drain the sink, stop Faust (final commit), then the broker and endpoint."""
        if self.thread is not None:
            pipeline = self.pipeline

            async def drain() -> None:
                if pipeline is not None:
                    await pipeline.finish()
                    await pipeline.sink.drain(drain_timeout)

            self.thread.shutdown(drain, timeout=drain_timeout + 30)
            self.thread = None
        close = getattr(self.scorer, "close", None)
        if close is not None:
            close()
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.announce:
            instance_file(self.settings).unlink(missing_ok=True)

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the CLI and tests ask --------------------------------------------
    def _announce(self) -> None:
        info = {
            "pid": os.getpid(),
            "kafka_bootstrap": self.bootstrap,
            "http": self.http.url if self.http else None,
            "started_at": self.started_at,
        }
        instance_file(self.settings).write_text(json.dumps(info))

    def query(self, sql: str, fmt: str) -> bytes:
        """Run a read-only query and return ClickHouse's formatted output."""
        result: bytes = self.reader.raw_query(sql, fmt=fmt)
        return result

    def acked_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> highest offset whose rows are stored and acknowledged."""
        return dict(self.pipeline.acked) if self.pipeline else {}

    def stored_through(self, targets: Mapping[tuple[str, int], int]) -> bool:
        """Whether every message up to ``targets`` offsets is stored and acknowledged.

        Raises :class:`PulseError` if the worker's ingest agent crashed (nothing more
        will be acknowledged)."""
        if self.faust.crashed is not None:
            raise PulseError(f"the worker crashed: {self.faust.crashed!r}")
        acked = self.acked_offsets()
        return all(acked.get(tp, -1) >= offset for tp, offset in targets.items())

    def settled(self) -> bool:
        """No event held (for event-time order or a checkpoint), no ack waiting for ClickHouse."""
        p = self.pipeline
        return p is None or (p.unacknowledged == 0 and p.sink.pending_acks == 0)

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> next offset to read, as Faust committed it to the broker."""
        if self.thread is None:
            return {}
        consumer = self.faust.app.consumer
        committed = getattr(consumer, "_committed_offset", {})
        return {(tp.topic, tp.partition): off for tp, off in committed.items() if off is not None}

    def status(self) -> dict[str, Any]:
        p = self.pipeline
        sink = p.sink if p else None
        status: dict[str, Any] = {
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "kafka": self.bootstrap,
            "clickhouse": self.settings.clickhouse_url.split("@")[-1] or "chDB (embedded)",
            "processed": p.processed if p else 0,
            "rejected": p.rejected if p else 0,
            "duplicates": p.duplicates if p else 0,
            "sink_backlog_rows": sink.backlog_rows if sink else 0,
            "sink_pending_acks": sink.pending_acks if sink else 0,
            "sink_flushes": sink.flushes if sink else 0,
            "sink_error": str(sink.last_error) if sink and sink.last_error else None,
            "events_held": p.unacknowledged if p else 0,
            "events_released_early": p.order.forced if p else 0,
        }
        if self.scorer is not None and hasattr(self.scorer, "status"):
            status.update(self.scorer.status())
        return status
