"""Settings: every knob, its environment variable, default and meaning, in one place.

The README's configuration table is generated from :data:`SETTINGS_DOC`, so
the two never drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from schemas.errors import PulseError

__all__ = ["Settings", "SettingsError", "SETTINGS_DOC"]


class SettingsError(PulseError):
    """An environment variable holds a value Pulse cannot use."""


def _env(name: str, default: str, doc: str) -> str:
    # `field` metadata carries the variable name and its documentation.
    return field(default=default, metadata={"env": name, "doc": doc})


def _num(name: str, default: float | int, doc: str) -> float:
    return field(default=default, metadata={"env": name, "doc": doc})


def _secret(name: str, doc: str) -> str:
    # A secret: kept out of the dataclass repr (and so out of logs and tracebacks).
    return field(default="", repr=False, metadata={"env": name, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Pulse's configuration, read from ``PULSE_*`` environment variables."""

    kafka_bootstrap: str = _env(
        "PULSE_KAFKA_BOOTSTRAP",
        "",
        "Kafka bootstrap servers (host:port,...). Empty: start the embedded Tansu broker.",
    )
    topic_prefix: str = _env("PULSE_TOPIC_PREFIX", "pulse.", "Prefix of every topic name.")
    partitions: int = _num(  # type: ignore[assignment]
        "PULSE_PARTITIONS",
        4,
        "Partitions of the topics Pulse creates (input topics co-partitioned).",
    )
    app_id: str = _env(
        "PULSE_APP_ID",
        "pulse",
        "Faust application id: the consumer group, and the state changelog "
        "<id>-member-state-changelog.",
    )
    clickhouse_url: str = _env(
        "PULSE_CLICKHOUSE_URL",
        "",
        "ClickHouse server URL (http[s]://user:pass@host:port). "
        "Empty: embedded chDB in the data dir.",
    )
    clickhouse_database: str = _env(
        "PULSE_CLICKHOUSE_DATABASE",
        "pulse",
        "ClickHouse database holding Pulse's tables and views.",
    )
    data_dir: str = _env(
        "PULSE_DATA_DIR", "./.pulse", "Local data: the embedded ClickHouse, Faust state, run files."
    )
    store: str = _env(
        "PULSE_STORE",
        "memory",
        "Where the worker keeps the member-state Faust table: memory (recovered from its "
        "changelog topic at start) or rocksdb (on disk in the data dir; recovery reads only "
        "the changelog's tail).",
    )
    max_event_bytes: int = _num(  # type: ignore[assignment]
        "PULSE_MAX_EVENT_BYTES", 65536, "Largest accepted message; larger ones are rejected."
    )
    max_future_skew_seconds: float = _num(
        "PULSE_MAX_FUTURE_SKEW_SECONDS",
        300,
        "How far occurred_at may lie ahead of ingestion time before it is rejected.",
    )
    sink_batch_rows: int = _num(  # type: ignore[assignment]
        "PULSE_SINK_BATCH_ROWS", 5000, "Flush the ClickHouse batch at this many buffered rows."
    )
    sink_flush_seconds: float = _num(
        "PULSE_SINK_FLUSH_SECONDS", 1.0, "Flush the ClickHouse batch at least this often."
    )
    sink_max_backlog_rows: int = _num(  # type: ignore[assignment]
        "PULSE_SINK_MAX_BACKLOG_ROWS",
        50000,
        "Back-pressure: stop reading input while this many rows wait for ClickHouse.",
    )
    sink_retry_max_seconds: float = _num(
        "PULSE_SINK_RETRY_MAX_SECONDS", 30.0, "Longest back-off between retries of a failed flush."
    )
    metrics_port: int = _num(  # type: ignore[assignment]
        "PULSE_METRICS_PORT",
        9464,
        "Port of the worker's HTTP endpoint: /metrics, /healthz, the API and the live "
        "community page (0: any free port).",
    )
    metrics_host: str = _env(
        "PULSE_METRICS_HOST", "127.0.0.1", "Interface the HTTP endpoint binds to."
    )
    api_token: str = _secret(
        "PULSE_API_TOKEN",
        "Bearer token for every HTTP endpoint but /metrics and /healthz (Authorization: "
        "Bearer <token>; browsers may send it as the Basic-auth password). Empty: those "
        "endpoints answer loopback clients only. Never logged.",
    )
    http_cors_origins: str = _env(
        "PULSE_HTTP_CORS_ORIGINS",
        "",
        "Comma-separated origins allowed to call the HTTP API from a browser (CORS), e.g. "
        "https://app.example.com; * for any. Empty: no CORS headers.",
    )
    http_max_body_bytes: int = _num(  # type: ignore[assignment]
        "PULSE_HTTP_MAX_BODY_BYTES",
        1048576,
        "Largest request body the collector (POST /v1/events) and POST /query accept.",
    )
    http_max_events: int = _num(  # type: ignore[assignment]
        "PULSE_HTTP_MAX_EVENTS", 500, "Most events one POST /v1/events request may carry."
    )
    http_produce_timeout_seconds: float = _num(
        "PULSE_HTTP_PRODUCE_TIMEOUT_SECONDS",
        5.0,
        "How long the collector waits for the broker to confirm a request's events before "
        "it answers 503 with Retry-After.",
    )
    health_sink_failure_seconds: float = _num(
        "PULSE_HEALTH_SINK_FAILURE_SECONDS",
        60.0,
        "/healthz answers 503 once ClickHouse inserts have failed for this long without a success.",
    )
    query_max_execution_seconds: float = _num(
        "PULSE_QUERY_MAX_EXECUTION_SECONDS",
        10.0,
        "max_execution_time of POST /query and pulse query on a running worker.",
    )
    query_max_memory_bytes: int = _num(  # type: ignore[assignment]
        "PULSE_QUERY_MAX_MEMORY_BYTES",
        1073741824,
        "max_memory_usage of POST /query and pulse query on a running worker.",
    )
    query_max_result_rows: int = _num(  # type: ignore[assignment]
        "PULSE_QUERY_MAX_RESULT_ROWS",
        100000,
        "max_result_rows of POST /query and pulse query on a running worker (more rows: "
        "an error, never a truncated answer).",
    )
    pseudonym_key: str = _env(
        "PULSE_PSEUDONYM_KEY",
        "",
        "Secret key for member-id pseudonyms in ClickHouse (HMAC-SHA256). Empty: a key is "
        "generated once and kept in the data dir. Never logged.",
    )
    rebalance_timeout_seconds: float = _num(
        "PULSE_REBALANCE_TIMEOUT_SECONDS",
        4.0,
        "Consumer-group rebalance timeout; Tansu waits about half of it before a join completes.",
    )
    input_idle_seconds: float = _num(
        "PULSE_INPUT_IDLE_SECONDS",
        5.0,
        "An input topic-partition that has not delivered yet, or has no high watermark, and "
        "delivered nothing for this long stops holding the event-time horizon back (one "
        "caught up with its high watermark stops at once).",
    )
    max_held_events: int = _num(  # type: ignore[assignment]
        "PULSE_MAX_HELD_EVENTS",
        200000,
        "Events held for event-time order at most; past it the oldest are applied anyway.",
    )
    checkpoint_seconds: float = _num(
        "PULSE_CHECKPOINT_SECONDS",
        2.0,
        "Member states, models and alert state are checkpointed (to ClickHouse and the "
        "member-state changelog) at most this often, and when input stops; events are "
        "acknowledged once a checkpoint covers them.",
    )
    churn_window_days: float = _num(
        "PULSE_CHURN_WINDOW_DAYS", 30, "Event-time days of silence after which a member churned."
    )
    conversion_window_days: float = _num(
        "PULSE_CONVERSION_WINDOW_DAYS",
        90,
        "Event-time days in which a purchase counts as converted.",
    )
    alert_rules: str = _env(
        "PULSE_ALERT_RULES",
        "",
        "TOML file of alert rules (format: scoring/alerts/default_rules.toml). "
        "Empty: the shipped defaults.",
    )
    log_level: str = _env("PULSE_LOG_LEVEL", "warn", "crit, error, warn, info or debug.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            if name not in env:
                continue
            raw = env[name]
            try:
                if isinstance(f.default, bool):
                    values[f.name] = raw.lower() in {"1", "true", "yes"}
                elif isinstance(f.default, int):
                    values[f.name] = int(raw)
                elif isinstance(f.default, float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise SettingsError(
                    f"{name}={raw!r} is not a valid {type(f.default).__name__}"
                ) from None
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`SettingsError` on values that cannot work."""
        if self.partitions < 1:
            raise SettingsError("PULSE_PARTITIONS must be at least 1")
        if self.sink_batch_rows < 1 or self.sink_flush_seconds <= 0:
            raise SettingsError("PULSE_SINK_BATCH_ROWS and PULSE_SINK_FLUSH_SECONDS must be > 0")
        if self.clickhouse_url and not self.clickhouse_url.startswith(("http://", "https://")):
            raise SettingsError("PULSE_CLICKHOUSE_URL must start with http:// or https://")
        if not self.clickhouse_database.isidentifier():
            raise SettingsError("PULSE_CLICKHOUSE_DATABASE must be a plain identifier")
        if self.store not in {"memory", "rocksdb"}:
            raise SettingsError(f"PULSE_STORE must be memory or rocksdb, not {self.store!r}")
        if self.input_idle_seconds <= 0 or self.max_held_events < 1:
            raise SettingsError("PULSE_INPUT_IDLE_SECONDS must be > 0, PULSE_MAX_HELD_EVENTS >= 1")
        if self.checkpoint_seconds < 0:
            raise SettingsError("PULSE_CHECKPOINT_SECONDS must be >= 0")
        if self.http_max_body_bytes < 1024 or self.http_max_events < 1:
            raise SettingsError(
                "PULSE_HTTP_MAX_BODY_BYTES must be >= 1024 and PULSE_HTTP_MAX_EVENTS >= 1"
            )
        if self.http_produce_timeout_seconds <= 0 or self.health_sink_failure_seconds <= 0:
            raise SettingsError(
                "PULSE_HTTP_PRODUCE_TIMEOUT_SECONDS and PULSE_HEALTH_SINK_FAILURE_SECONDS "
                "must be > 0"
            )
        if (
            self.query_max_execution_seconds <= 0
            or self.query_max_memory_bytes < 1
            or self.query_max_result_rows < 1
        ):
            raise SettingsError("the PULSE_QUERY_MAX_* limits must be > 0")
        if any(c.isspace() or c in "\"'" for c in self.api_token):
            raise SettingsError("PULSE_API_TOKEN must not contain spaces or quotes")

    def with_(self, **changes: object) -> Settings:
        """A copy with some settings changed (tests, the CLI's flags)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    # --- derived names -------------------------------------------------------
    def topic(self, name: str) -> str:
        """Full topic name: ``topic("interactions")`` -> ``pulse.interactions``."""
        return f"{self.topic_prefix}{name}"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def embedded_clickhouse(self) -> bool:
        return not self.clickhouse_url

    @property
    def cors_origins(self) -> list[str]:
        """``PULSE_HTTP_CORS_ORIGINS`` as a list (empty: CORS off)."""
        return [o.strip() for o in self.http_cors_origins.split(",") if o.strip()]


SETTINGS_DOC: list[tuple[str, str, str]] = [
    (f.metadata["env"], str(f.default) if f.default != "" else "(empty)", f.metadata["doc"])
    for f in fields(Settings)
]
