"""One running Pulse worker with everything it needs, started and stopped as a unit.

:class:`Runtime` starts, in order: the embedded broker (if no bootstrap is
configured) and the topics; ClickHouse (chDB or a server) and its migrations;
the pipeline and its partition tasks, wired by :func:`build_pipeline`; the Faust
worker in a background thread with its own event loop; the HTTP endpoint.
``stop()`` lets every task commit what it applied (so it is stored and
acknowledged), stops Faust (which commits the offsets), then stops what it
started, by PID.

The CLI (``pulse up``, ``pulse replay``, ``pulse worker``) and the integration
tests use this same class.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import faust
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry

from schemas.errors import PulseError
from schemas.registry import StreamName
from scoring.config import ScoringConfig
from sinks.clickhouse import ClickHouseSink, EventIdIndex, connect
from sinks.migrations import apply_migrations
from sinks.privacy import Pseudonymizer, load_or_create_key
from sinks.sealing import Sealer
from streams.alerting import rules_from_settings
from streams.app import COMMUNITY_TOPIC, INPUT_STREAMS, OUTPUT_TOPICS, PulseApp
from streams.broker import EmbeddedBroker, cluster_id, ensure_topics, wait_for_broker
from streams.checkpoint_store import (
    Checkpoints,
    ClickHouseCheckpoints,
    KafkaCheckpoints,
    read_commits,
    roll_back,
)
from streams.config import Settings, redact_url
from streams.erasure_feed import ErasureFeed, FeedFollower
from streams.kafka_config import librdkafka_config
from streams.metrics import PulseMetrics
from streams.outputs import OutputProducer
from streams.pipeline import Pipeline
from streams.task import TaskContext, open_member
from streams.web import WebServer, create_app
from streams.web.wiring import web_deps
from streams.webhooks import WebhookSender

__all__ = ["Runtime", "MetricsObserver", "build_pipeline", "instance_file", "read_instance"]

log = logging.getLogger(__name__)


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
    """A Faust worker that leaves signals to the process's main thread and draws no
    start-up spinner (Faust's writes a backspace and a cursor-show escape sequence to
    stdout when it stops, terminal or not: a stray ``\b\x1b[?25h`` in every log)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None

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


def build_pipeline(
    settings: Settings,
    *,
    bootstrap: str,
    broker_id: str,
    clickhouse: Client,
    pseudonym_key: bytes,
    faust_app: PulseApp,
    metrics: PulseMetrics,
    erasure_feed: ErasureFeed | None = None,
) -> Pipeline:
    """Build the pipeline and everything its partition tasks share, from the settings."""
    s = settings
    database = s.clickhouse_database
    sink = ClickHouseSink(
        clickhouse,
        database,
        batch_rows=s.sink_batch_rows,
        flush_seconds=s.sink_flush_seconds,
        max_backlog_rows=s.sink_max_backlog_rows,
        retry_max_seconds=s.sink_retry_max_seconds,
        observer=MetricsObserver(metrics),
    )
    # a client runs one call at a time: each reader or writer beside the sink gets its own,
    # so none of them holds the sink's inserts behind its calls
    own_client = partial(connect, s.clickhouse_url, None, s.data_path, ca_file=s.clickhouse_ca_file)
    index = EventIdIndex(own_client(), database)
    kafka = librdkafka_config(s)
    rules = rules_from_settings(s.alert_rules)
    pseudonym = Pseudonymizer(pseudonym_key)
    sealer = Sealer.from_key(pseudonym_key)
    store: Checkpoints
    if s.state_store_kind == "kafka":
        assert faust_app.state is not None
        store = KafkaCheckpoints(
            faust_app.state, bootstrap, s.commits_topic, {"bootstrap.servers": bootstrap, **kafka}
        )
    else:
        store = ClickHouseCheckpoints(clickhouse, database)
        # read and open the checkpoints while the worker joins its group (issue 9: restore)
        store.prefetch(
            range(s.partitions),
            partial(open_member, sealer),
            own_client(),
        )
    for rule in rules.rules:  # counters exist at 0 from the start, so rate() sees the first
        metrics.alerts_fired.labels(rule.name, rule.severity)
        metrics.alerts_resolved.labels(rule.name, rule.severity)
    ctx = TaskContext(
        config=ScoringConfig(
            churn_window_days=s.churn_window_days,
            conversion_window_days=s.conversion_window_days,
            promote_challenger=s.promote_challenger,
        ),
        rules=rules,
        inputs=tuple(s.topic(n) for n in INPUT_STREAMS),
        community_topic=s.topic(COMMUNITY_TOPIC),
        partitions=s.partitions,
        scores_topic=s.topic("scores"),
        alerts_topic=s.topic("alerts"),
        sink=sink,
        index=index,
        store=store,
        outputs=OutputProducer({"bootstrap.servers": bootstrap, **kafka}),
        pseudonym=pseudonym,
        sealer=sealer,
        metrics=metrics,
        # an erasure's DELETEs (up to a second) on the sink's client held every insert
        clickhouse=own_client(),
        database=database,
        bootstrap=bootstrap,
        kafka_config=kafka,
        broker_id=broker_id,
        checkpoint_seconds=s.checkpoint_seconds,
        live_checkpoint_seconds=s.live_checkpoint_seconds,
        idle_seconds=s.input_idle_seconds,
        max_held=s.max_held_events,
        highwater=faust_app.highwater,
        ends=faust_app.end_offset,
        erasure_feed=erasure_feed,
    )
    streams: dict[str, StreamName] = {s.topic(n): n for n in INPUT_STREAMS}  # type: ignore[misc]
    pipeline = Pipeline(
        ctx,
        streams=streams,
        dead_letter_topic=s.topic("dead-letter"),
        max_event_bytes=s.max_event_bytes,
        max_future_skew=timedelta(seconds=s.max_future_skew_seconds),
        min_event_time=s.min_event_time_utc,
        dead_letter_max_bytes=s.dead_letter_max_bytes,
        rewind=faust_app.rewinder.rewind,
    )
    return pipeline


def open_feed(settings: Settings, bootstrap: str, clickhouse: Client) -> ErasureFeed:
    """The deployment's erasure feed (its topic made if missing), carried out on
    ``clickhouse`` (a client of its own: the sink's is busy in the worker's thread)."""
    kafka = librdkafka_config(settings)
    topic = settings.erasure_feed_topic
    ensure_topics(  # kept without a time limit: a shard may be away for long
        bootstrap,
        [topic],
        1,
        replication_factor=settings.replication_factor,
        config=kafka,
        topic_config={"retention.ms": "-1"},
    )
    return ErasureFeed(
        bootstrap,
        topic,
        clickhouse,
        settings.clickhouse_database,
        broker=cluster_id(bootstrap, kafka),
        kafka_config=kafka,
    )


def tune_gc() -> None:
    """Fewer collections of the young generation, and none over the start-up objects.

    Scoring allocates many short-lived objects and few cycles; at CPython's default
    threshold (700) the collector runs thousands of times a second and shows near the
    top of a replay's profile (README, Performance). ``gc.freeze`` moves what start-up
    built (modules, settings, the Faust app) out of every later collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


class Runtime:
    """A Pulse worker and the components it depends on."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        serve_http: bool = True,
        announce: bool = True,
    ) -> None:
        self.settings = settings
        self.metrics = PulseMetrics(registry)
        self.serve_http = serve_http
        self.announce = announce
        self.broker: EmbeddedBroker | None = None
        self.http: WebServer | None = None
        self.thread: _WorkerThread | None = None
        self.pipeline: Pipeline | None = None
        self.webhooks: WebhookSender | None = None
        self.bootstrap = settings.kafka_bootstrap
        self.started_at = time.time()
        self.rolled_back_at_start = 0
        self.feed: ErasureFeed | None = None
        self.follower: FeedFollower | None = None

    # --- lifecycle -------------------------------------------------------------
    def start(self, timeout: float = 60.0, *, consume: bool = True) -> Runtime:
        """Start everything; with ``consume=False`` all but the Faust worker (see
        :meth:`consume`), so a backfill can be published before anything is read."""
        s = self.settings
        s.validate()  # e.g. an external broker without the deployment's pseudonym key
        kafka = librdkafka_config(s)
        s.data_path.mkdir(parents=True, exist_ok=True)
        if s.embedded_kafka:
            self.broker = EmbeddedBroker(log_path=s.data_path / "tansu.log").start()
            self.bootstrap = self.broker.bootstrap
        else:
            wait_for_broker(self.bootstrap, config=kafka)
        topics = [s.topic(n) for n in (*INPUT_STREAMS, *OUTPUT_TOPICS, COMMUNITY_TOPIC)]
        replication = s.replication_factor
        ensure_topics(
            self.bootstrap, topics, s.partitions, replication_factor=replication, config=kafka
        )
        if s.state_store_kind == "kafka":
            ensure_topics(
                self.bootstrap,
                [s.commits_topic],
                1,
                replication_factor=replication,
                config=kafka,
                topic_config={"cleanup.policy": "compact"},
            )
        self.broker_id = cluster_id(self.bootstrap, kafka)

        ca = s.clickhouse_ca_file
        self.clickhouse = connect(s.clickhouse_url, None, s.data_path, ca_file=ca)
        apply_migrations(self.clickhouse, s.clickhouse_database)
        # this ClickHouse first carries out what other workers erased while it was away
        feed_client = connect(s.clickhouse_url, None, s.data_path, ca_file=ca)
        self.feed = open_feed(s, self.bootstrap, feed_client)
        self.feed.catch_up()
        if s.state_store_kind == "kafka":
            self._roll_back_every_task(kafka)
        self.reader = connect(
            s.clickhouse_url, s.clickhouse_database, s.data_path, readonly=True, ca_file=ca
        )
        self.pseudonym_key = load_or_create_key(s.pseudonym_key, s.data_path)
        self.pseudonym = Pseudonymizer(self.pseudonym_key)
        self.faust = PulseApp(s, self.bootstrap, committed_offset=self.metrics.committed_offset)
        self.pipeline = build_pipeline(
            s,
            bootstrap=self.bootstrap,
            broker_id=self.broker_id,
            clickhouse=self.clickhouse,
            pseudonym_key=self.pseudonym_key,
            faust_app=self.faust,
            metrics=self.metrics,
            erasure_feed=self.feed,
        )
        self.faust.pipeline = self.pipeline
        self.metrics.build_info.info(
            {"version": "0.1.0", "kafka": "embedded" if self.broker else "external"}
        )
        self._build_webhooks()
        if consume:
            self.consume(timeout)
        if self.serve_http:
            pipeline = self.pipeline
            assert pipeline is not None
            deps = web_deps(
                self, local_member=pipeline.local_member, suppressed=pipeline.suppressed
            )
            app = create_app(deps)
            self.http = WebServer(app, s.metrics_host, s.metrics_port).start()
        if self.announce:
            self._announce()
        return self

    def _roll_back_every_task(self, kafka: dict[str, Any]) -> None:
        """Before joining the group: delete this ClickHouse's rows of checkpoints that never
        committed, for every task, not only those this worker will be assigned.

        With one ClickHouse per worker, rows a worker wrote before it crashed are in its
        own database only; the task they belong to may be restored elsewhere and never
        come back here, so this is the one moment they can be found."""
        s = self.settings
        commits = read_commits(self.bootstrap, s.commits_topic, config=kafka)
        deleted = 0
        for task in range(s.partitions):
            rows = roll_back(
                self.clickhouse, s.clickhouse_database, task, commits.get(task), "kafka"
            )
            deleted += sum(rows.values())
        self.rolled_back_at_start = deleted

    def _build_webhooks(self) -> None:
        """The webhook sender (its own ClickHouse client), if a rule posts to a webhook."""
        s = self.settings
        rules = rules_from_settings(s.alert_rules)
        if not rules.webhooks:
            return
        try:
            self.webhooks = WebhookSender(
                connect(s.clickhouse_url, None, s.data_path, ca_file=s.clickhouse_ca_file),
                s.clickhouse_database,
                rules,
                deliveries=self.metrics.webhook_deliveries,
                sealer=Sealer.from_key(self.pseudonym_key),
                poll_seconds=s.webhook_poll_seconds,
            ).start()
        except PulseError:  # e.g. a webhook's secret is not set: stop what started
            self.stop()
            raise

    def consume(self, timeout: float = 60.0) -> None:
        """Start the Faust worker: join the consumer group and process input."""
        tune_gc()
        if self.feed is not None and self.follower is None:
            self.follower = FeedFollower(self.feed, self.settings.erasure_feed_seconds)
            self.follower.start()
        if not self.faust.ends.is_alive():
            self.faust.ends.start()
        self.thread = _WorkerThread(self.faust.app, self.settings.log_level)
        self.thread.start()
        if not self.thread.started.wait(timeout) or self.thread.error is not None:
            error = self.thread.error
            self.stop()
            raise RuntimeError(f"the Faust worker did not start: {error!r}")

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Commit every task, stop Faust (final offset commit), then the broker and endpoint.

        Kafka clients close before the embedded broker stops, so none of them logs
        "connection refused" on the way out."""
        if self.thread is not None:
            pipeline = self.pipeline

            async def drain() -> None:
                if pipeline is not None:
                    await pipeline.finish()
                    await pipeline.sink.drain(drain_timeout)

            self.thread.shutdown(drain, timeout=drain_timeout + 30)
            self.thread = None
        self._stop_feed()
        faust_app = getattr(self, "faust", None)  # None: start failed before the worker
        if faust_app is not None:
            faust_app.ends.stop()
        if self.pipeline is not None:
            self.pipeline.ctx.outputs.close()
            close = getattr(self.pipeline.ctx.store, "close", None)
            if close is not None:
                close()
        if self.webhooks is not None:
            self.webhooks.stop()
            self.webhooks = None
        if self.http is not None:
            self.http.stop()
            self.http = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self.announce:
            instance_file(self.settings).unlink(missing_ok=True)

    def _stop_feed(self) -> None:
        """Stop following the erasure feed, after a last round (what others erased until
        now is carried out here too)."""
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        if self.feed is not None:
            try:
                self.feed.catch_up()
            except Exception as exc:
                log.warning("the last round of the erasure feed failed: %s", exc)
            self.feed.close()
            self.feed = None

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
        """(topic, partition) -> highest offset whose checkpoint committed (acknowledged)."""
        return dict(self.pipeline.acked) if self.pipeline else {}

    def stored_through(self, targets: Mapping[tuple[str, int], int]) -> bool:
        """Whether every message up to ``targets`` offsets is committed and acknowledged.

        Raises :class:`PulseError` if the worker's ingest agent crashed (nothing more
        will be acknowledged)."""
        if self.faust.crashed is not None:
            raise PulseError(f"the worker crashed: {self.faust.crashed!r}")
        acked = self.acked_offsets()
        return all(acked.get(tp, -1) >= offset for tp, offset in targets.items())

    def drained(self) -> bool:
        """Once the inputs are stored: every task caught up, its watermark sent, its daily
        batch of scores and its erasures committed, and every community message produced
        so far applied and committed -- so the community alerts of the last periods are in
        too (``pulse replay`` and ``pulse evaluate`` wait for it)."""
        p = self.pipeline
        if p is None:
            return True
        now = time.monotonic()
        for task in p.tasks.values():
            if task.held or not task.order.caught_up(now) or not task.reported:
                return False
            if not task.flushed:
                return False
        topic = self.settings.topic(COMMUNITY_TOPIC)
        acked = self.acked_offsets()
        produced = p.ctx.outputs.produced_through(topic)
        if any(acked.get((topic, part), -1) < end - 1 for part, end in produced.items()):
            return False
        return self.settled()

    def settled(self) -> bool:
        """Nothing held for event-time order, nothing waiting for a commit or ClickHouse."""
        p = self.pipeline
        return p is None or (p.unacknowledged == 0 and p.sink.pending_acks == 0)

    def status(self) -> dict[str, Any]:
        p = self.pipeline
        sink = p.sink if p else None
        tasks = p.tasks if p else {}
        status: dict[str, Any] = {
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "kafka": self.bootstrap,
            "clickhouse": redact_url(self.settings.clickhouse_url) or "chDB (embedded)",
            "state_store": self.settings.state_store_kind,
            "processed": p.processed if p else 0,
            "rejected": p.rejected if p else 0,
            "duplicates": p.duplicates if p else 0,
            "redelivered_skipped": p.skipped if p else 0,
            "offset_holes": p.holes if p else 0,
            "input_rewinds": p.rewinds if p else 0,
            "consent_withheld": sum(t.withheld for t in tasks.values()),
            "erased_events": sum(t.erasures.erased_events for t in tasks.values()),
            "erasures_pending": sum(1 for t in tasks.values() if t.erasures.due),
            "erasures_published": self.feed.published if self.feed else 0,
            "erasure_feed_position": self.feed.position if self.feed else 0,
            "erasure_feed_applied": self.feed.applied if self.feed else 0,
            "sink_backlog_rows": sink.backlog_rows if sink else 0,
            "sink_pending_acks": sink.pending_acks if sink else 0,
            "sink_flushes": sink.flushes if sink else 0,
            "sink_error": str(sink.last_error) if sink and sink.last_error else None,
            "events_held": p.unacknowledged if p else 0,
            "events_released_early": sum(t.order.forced for t in tasks.values()),
            "horizon_waits": sum(t.order.gated for t in tasks.values()),
            "events_out_of_order": sum(t.order.behind for t in tasks.values()),
            "members": p.members if p else 0,
            "partitions": sorted(tasks),
            "rebalances": self.faust.rebalances if self.thread else 0,
            "restored_members": sum(t.restored_members for t in tasks.values()),
            "rolled_back_rows": self.rolled_back_at_start
            + sum(sum(t.rolled_back.values()) for t in tasks.values()),
            "skipped_outputs": sum(t.skipped_outputs for t in tasks.values()),
            "at_risk": sum(t.risks.get("high", 0) for t in tasks.values()),
            "alerts_fired": sum(t.alerts_fired for t in tasks.values()),
        }
        return status
