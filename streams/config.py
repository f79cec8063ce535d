"""Settings: every knob, its environment variable, default and meaning, in one place.

The README's configuration table is generated from :data:`SETTINGS_DOC`, so
the two never drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from schemas.errors import PulseError

__all__ = ["Settings", "SettingsError", "SETTINGS_DOC", "redact_url", "MASK"]

#: What a secret looks like in a repr, a log line or /status.
MASK = "***"

#: Query parameters of a URL that hold credentials (clickhouse-connect reads some of them).
_SECRET_PARAMS = frozenset({"password", "pass", "pwd", "secret", "token", "access_token"})

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class SettingsError(PulseError):
    """An environment variable holds a value Pulse cannot use."""


#: Scores are versioned by event time in microseconds since 1970 (a UInt64): the floor of
#: the event-time floor.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_FUTURE_SKEW_SECONDS = 366 * 86400
#: A dead-letter record must hold its headers (about 1.3 KB at most) and some payload.
MIN_DEAD_LETTER_BYTES = 4096


def _env(name: str, default: str, doc: str, *, secret: bool = False) -> str:
    # `field` metadata carries the variable name, its documentation, and whether the
    # value is a secret (masked in the repr, hence in logs and /status).
    return field(default=default, metadata={"env": name, "doc": doc, "secret": secret})


def redact_url(url: str) -> str:
    """``url`` with its password (user info or query parameter) replaced by ``***``.

    >>> redact_url("https://pulse:s3cret@ch.example:8443/?database=pulse")
    'https://pulse:***@ch.example:8443/?database=pulse'
    >>> redact_url("http://ch:8123?user=u&password=s3cret")
    'http://ch:8123?user=u&password=***'
    """
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # unparseable: show nothing rather than risk a secret
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
            query = urlencode(
                [(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _num(name: str, default: float | int, doc: str) -> float:
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True, repr=False)
class Settings:
    """Pulse's configuration, read from ``PULSE_*`` environment variables.

    Secrets (the pseudonym key, the Kafka SASL and TLS key passwords, the password
    in the ClickHouse URL) are masked in the repr, so neither a log line nor
    ``/status`` that shows the settings can leak them.
    """

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
        "Where the worker keeps the member-state Faust table (with PULSE_STATE_STORE=kafka): "
        "memory (recovered from its changelog topic at start) or rocksdb (on disk in the data "
        "dir; recovery reads only the changelog's tail).",
    )
    state_store: str = _env(
        "PULSE_STATE_STORE",
        "",
        "The record of partition-task checkpoints: clickhouse (task_state, one insert per "
        "checkpoint batch) or kafka (the member-state changelog and the "
        "<id>-task-commits topic). Empty: kafka with an external broker, clickhouse with "
        "the embedded one (which keeps nothing across restarts).",
    )
    max_event_bytes: int = _num(  # type: ignore[assignment]
        "PULSE_MAX_EVENT_BYTES", 65536, "Largest accepted message; larger ones are rejected."
    )
    max_future_skew_seconds: float = _num(
        "PULSE_MAX_FUTURE_SKEW_SECONDS",
        300,
        "How far occurred_at may lie ahead of ingestion time before it is rejected "
        "(the event-time ceiling; at most 366 days).",
    )
    min_event_time: str = _env(
        "PULSE_MIN_EVENT_TIME",
        "2000-01-01T00:00:00Z",
        "The event-time floor (RFC 3339 with an offset, not before 1970): older events are "
        "rejected as schema_violation.",
    )
    dead_letter_max_bytes: int = _num(  # type: ignore[assignment]
        "PULSE_DEAD_LETTER_MAX_BYTES",
        1000000,
        "Largest dead-letter record (key, value and headers; at least 4096): a larger copy "
        "keeps the start of the payload, with its sha256 and size in headers. Keep it within "
        "the dead-letter topic's max.message.bytes.",
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
    api_token: str = _env(
        "PULSE_API_TOKEN",
        "",
        "Bearer token for every HTTP endpoint but /metrics and /healthz (Authorization: "
        "Bearer <token>; browsers may send it as the Basic-auth password). Empty: those "
        "endpoints answer loopback clients only. Never logged.",
        secret=True,
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
        "Secret key (at least 16 characters) for member-id pseudonyms and sealed states "
        "(HMAC-SHA256, AES-GCM). The same on every worker of a deployment: required with "
        "an external broker (PULSE_KAFKA_BOOTSTRAP). Empty with the embedded broker: a key "
        "is generated once and kept in the data dir. Never logged.",
        secret=True,
    )
    rebalance_timeout_seconds: float = _num(
        "PULSE_REBALANCE_TIMEOUT_SECONDS",
        4.0,
        "Consumer-group rebalance timeout. The session timeout is the larger of it and 6 s "
        "(Kafka's default minimum); Tansu completes a group join after half the session timeout.",
    )
    input_idle_seconds: float = _num(
        "PULSE_INPUT_IDLE_SECONDS",
        5.0,
        "An input topic-partition the broker reports no high watermark or end offset for "
        "stops holding the event-time horizon back after delivering nothing for this long "
        "(one caught up with its high watermark stops at once; one that delivered nothing "
        "while its partition holds messages, after 12 times this).",
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
    live_checkpoint_seconds: float = _num(
        "PULSE_LIVE_CHECKPOINT_SECONDS",
        0.25,
        "A task whose inputs have at most 1,000 messages more than it received (a live "
        "stream, not a backlog) checkpoints at most this often instead, so its rows are "
        "queryable sooner; a backlog keeps PULSE_CHECKPOINT_SECONDS and its larger batches.",
    )
    erasure_feed_seconds: float = _num(
        "PULSE_ERASURE_FEED_SECONDS",
        5.0,
        "How often a worker carries out, on its own ClickHouse, the erasures and consent "
        "withdrawals other workers published on the erasure feed (also at start and stop).",
    )
    churn_window_days: float = _num(
        "PULSE_CHURN_WINDOW_DAYS", 30, "Event-time days of silence after which a member churned."
    )
    conversion_window_days: float = _num(
        "PULSE_CONVERSION_WINDOW_DAYS",
        90,
        "Event-time days in which a purchase counts as converted.",
    )
    promote_challenger: bool = _num(  # type: ignore[assignment]
        "PULSE_PROMOTE_CHALLENGER",
        False,
        "Whether a detected drift may replace a model by a challenger trained on recent "
        "labels (true/false). Off: drifts are reported and the model adapts by refitting.",
    )
    alert_rules: str = _env(
        "PULSE_ALERT_RULES",
        "",
        "TOML file of alert rules (format: scoring/alerts/default_rules.toml). "
        "Empty: the shipped defaults.",
    )
    log_level: str = _env("PULSE_LOG_LEVEL", "warn", "crit, error, warn, info or debug.")
    replication_factor: int = _num(  # type: ignore[assignment]
        "PULSE_REPLICATION_FACTOR",
        1,
        "Replication factor of the topics Pulse creates (inputs, outputs, the state "
        "changelog). 1 on a single broker; 3 on a production cluster.",
    )
    kafka_security_protocol: str = _env(
        "PULSE_KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every Kafka client (Faust's "
        "consumer and producer, the producers, the admin). The embedded broker: PLAINTEXT.",
    )
    kafka_sasl_mechanism: str = _env(
        "PULSE_KAFKA_SASL_MECHANISM",
        "SCRAM-SHA-512",
        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol). PLAIN sends the "
        "password as it is: only over SASL_SSL.",
    )
    kafka_sasl_username: str = _env(
        "PULSE_KAFKA_SASL_USERNAME", "", "SASL user name (with a SASL_* protocol)."
    )
    kafka_sasl_password: str = _env(
        "PULSE_KAFKA_SASL_PASSWORD",
        "",
        "SASL password (with a SASL_* protocol). Never logged.",
        secret=True,
    )
    kafka_ssl_ca_file: str = _env(
        "PULSE_KAFKA_SSL_CA_FILE",
        "",
        "PEM file of the CA(s) that signed the brokers' certificates (SSL, SASL_SSL). "
        "Empty: the system's CAs.",
    )
    kafka_ssl_cert_file: str = _env(
        "PULSE_KAFKA_SSL_CERT_FILE",
        "",
        "PEM client certificate for mutual TLS (with PULSE_KAFKA_SSL_KEY_FILE).",
    )
    kafka_ssl_key_file: str = _env(
        "PULSE_KAFKA_SSL_KEY_FILE", "", "PEM private key of the client certificate."
    )
    kafka_ssl_key_password: str = _env(
        "PULSE_KAFKA_SSL_KEY_PASSWORD",
        "",
        "Password of an encrypted client key. Never logged.",
        secret=True,
    )
    clickhouse_ca_file: str = _env(
        "PULSE_CLICKHOUSE_CA_FILE",
        "",
        "PEM file of the CA that signed the ClickHouse server's certificate (with an "
        "https:// PULSE_CLICKHOUSE_URL). Empty: the system's CAs.",
    )
    webhook_poll_seconds: float = _num(
        "PULSE_WEBHOOK_POLL_SECONDS",
        1.0,
        "How often the webhook sender looks for undelivered alerts in the webhook_outbox table.",
    )

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

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = MASK
            elif f.name == "clickhouse_url":
                value = redact_url(value)
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def validate(self) -> None:
        """Raise :class:`SettingsError` on values that cannot work."""
        self._validate_key()
        self._validate_kafka_security()
        if self.replication_factor < 1:
            raise SettingsError("PULSE_REPLICATION_FACTOR must be at least 1")
        if self.webhook_poll_seconds <= 0:
            raise SettingsError("PULSE_WEBHOOK_POLL_SECONDS must be > 0")
        if self.clickhouse_ca_file and not self.clickhouse_url.startswith("https://"):
            raise SettingsError("PULSE_CLICKHOUSE_CA_FILE needs an https:// PULSE_CLICKHOUSE_URL")
        if self.partitions < 1:
            raise SettingsError("PULSE_PARTITIONS must be at least 1")
        if self.sink_batch_rows < 1 or self.sink_flush_seconds <= 0:
            raise SettingsError("PULSE_SINK_BATCH_ROWS and PULSE_SINK_FLUSH_SECONDS must be > 0")
        if self.clickhouse_url and not self.clickhouse_url.startswith(("http://", "https://")):
            raise SettingsError("PULSE_CLICKHOUSE_URL must start with http:// or https://")
        if not self.clickhouse_database.isidentifier():
            raise SettingsError("PULSE_CLICKHOUSE_DATABASE must be a plain identifier")
        if self.state_store not in {"", "clickhouse", "kafka"}:
            raise SettingsError(
                f"PULSE_STATE_STORE must be clickhouse, kafka or empty, not {self.state_store!r}"
            )
        if self.state_store == "kafka" and self.embedded_kafka:
            raise SettingsError(
                "PULSE_STATE_STORE=kafka needs PULSE_KAFKA_BOOTSTRAP: the embedded broker keeps "
                "nothing across restarts"
            )
        if self.store not in {"memory", "rocksdb"}:
            raise SettingsError(f"PULSE_STORE must be memory or rocksdb, not {self.store!r}")
        if self.input_idle_seconds <= 0 or self.max_held_events < 1:
            raise SettingsError("PULSE_INPUT_IDLE_SECONDS must be > 0, PULSE_MAX_HELD_EVENTS >= 1")
        if self.checkpoint_seconds < 0 or self.live_checkpoint_seconds < 0:
            raise SettingsError(
                "PULSE_CHECKPOINT_SECONDS and PULSE_LIVE_CHECKPOINT_SECONDS must be >= 0"
            )
        if self.erasure_feed_seconds <= 0:
            raise SettingsError("PULSE_ERASURE_FEED_SECONDS must be > 0")
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
        if not 0 <= self.max_future_skew_seconds <= MAX_FUTURE_SKEW_SECONDS:
            raise SettingsError("PULSE_MAX_FUTURE_SKEW_SECONDS must be between 0 and 366 days")
        self.min_event_time_utc  # noqa: B018 - parses and checks PULSE_MIN_EVENT_TIME
        if self.dead_letter_max_bytes < MIN_DEAD_LETTER_BYTES:
            raise SettingsError(f"PULSE_DEAD_LETTER_MAX_BYTES must be >= {MIN_DEAD_LETTER_BYTES}")

    def _validate_key(self) -> None:
        if not self.pseudonym_key:
            if not self.embedded_kafka:
                raise SettingsError(
                    "PULSE_PSEUDONYM_KEY must be set when PULSE_KAFKA_BOOTSTRAP names an "
                    "external broker: every worker of a deployment must use the same key "
                    "(generate one with `python -c 'import secrets; "
                    "print(secrets.token_hex(32))'` and give it to every worker)"
                )
            return
        if len(self.pseudonym_key.encode()) < 16:
            raise SettingsError("PULSE_PSEUDONYM_KEY must be at least 16 characters long")

    def _validate_kafka_security(self) -> None:
        protocol = self.kafka_security_protocol
        if protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise SettingsError(
                "PULSE_KAFKA_SECURITY_PROTOCOL must be one of "
                f"{', '.join(KAFKA_SECURITY_PROTOCOLS)}, not {protocol!r}"
            )
        if self.embedded_kafka and protocol != "PLAINTEXT":
            raise SettingsError(
                "PULSE_KAFKA_SECURITY_PROTOCOL: the embedded broker speaks PLAINTEXT only "
                "(set PULSE_KAFKA_BOOTSTRAP to use TLS or SASL)"
            )
        if protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise SettingsError(
                    "PULSE_KAFKA_SASL_MECHANISM must be one of "
                    f"{', '.join(KAFKA_SASL_MECHANISMS)}, not {self.kafka_sasl_mechanism!r}"
                )
            if not (self.kafka_sasl_username and self.kafka_sasl_password):
                raise SettingsError(
                    f"PULSE_KAFKA_SECURITY_PROTOCOL={protocol} needs PULSE_KAFKA_SASL_USERNAME "
                    "and PULSE_KAFKA_SASL_PASSWORD"
                )
        elif self.kafka_sasl_username or self.kafka_sasl_password:
            raise SettingsError(
                "PULSE_KAFKA_SASL_USERNAME/PASSWORD are set but PULSE_KAFKA_SECURITY_PROTOCOL "
                f"is {protocol}: use SASL_SSL (or SASL_PLAINTEXT)"
            )
        tls_files = {
            "PULSE_KAFKA_SSL_CA_FILE": self.kafka_ssl_ca_file,
            "PULSE_KAFKA_SSL_CERT_FILE": self.kafka_ssl_cert_file,
            "PULSE_KAFKA_SSL_KEY_FILE": self.kafka_ssl_key_file,
        }
        if protocol not in ("SSL", "SASL_SSL"):
            named = [name for name, value in tls_files.items() if value]
            if named or self.kafka_ssl_key_password:
                raise SettingsError(
                    f"{', '.join(named) or 'PULSE_KAFKA_SSL_KEY_PASSWORD'} set but "
                    f"PULSE_KAFKA_SECURITY_PROTOCOL is {protocol}: use SSL or SASL_SSL"
                )
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise SettingsError(
                "PULSE_KAFKA_SSL_CERT_FILE and PULSE_KAFKA_SSL_KEY_FILE go together (mutual TLS)"
            )

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
    def min_event_time_utc(self) -> datetime:
        """``PULSE_MIN_EVENT_TIME`` as an aware UTC datetime (raises SettingsError if unusable)."""
        try:
            floor = datetime.fromisoformat(self.min_event_time)
        except ValueError:
            raise SettingsError(
                f"PULSE_MIN_EVENT_TIME={self.min_event_time!r} is not an RFC 3339 time"
            ) from None
        if floor.tzinfo is None:
            raise SettingsError("PULSE_MIN_EVENT_TIME needs an offset (e.g. Z or +08:00)")
        try:
            floor = floor.astimezone(UTC)
        except OverflowError:
            floor = datetime.min.replace(tzinfo=UTC)
        if floor < EPOCH:
            raise SettingsError("PULSE_MIN_EVENT_TIME must not be before 1970-01-01T00:00:00Z")
        return floor

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def embedded_clickhouse(self) -> bool:
        return not self.clickhouse_url

    @property
    def state_store_kind(self) -> str:
        """``clickhouse`` or ``kafka``: PULSE_STATE_STORE, or the default for the broker."""
        if self.state_store:
            return self.state_store
        return "clickhouse" if self.embedded_kafka else "kafka"

    @property
    def cors_origins(self) -> list[str]:
        """``PULSE_HTTP_CORS_ORIGINS`` as a list (empty: CORS off)."""
        return [o.strip() for o in self.http_cors_origins.split(",") if o.strip()]

    @property
    def erasure_feed_topic(self) -> str:
        """The deployment's erasure feed (streams.erasure_feed): one per consumer group."""
        return f"{self.app_id}-erasures"

    @property
    def commits_topic(self) -> str:
        """The compacted topic of partition-task commit records (Kafka as the record)."""
        return f"{self.app_id}-task-commits"


SETTINGS_DOC: list[tuple[str, str, str]] = [
    (f.metadata["env"], str(f.default) if f.default != "" else "(empty)", f.metadata["doc"])
    for f in fields(Settings)
]
