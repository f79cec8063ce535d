"""Versioned, idempotent ClickHouse migrations, applied at start-up.

Each migration has a version and a list of statements; ``{db}`` stands for the
database. Applied versions are recorded in ``{db}.schema_migrations``; a
migration runs once, in order, and every statement is itself idempotent
(``IF NOT EXISTS``), so a crash half-way through is repaired by the next start.
Add a migration at the end; never edit one that has shipped.

Member ids in every table are pseudonyms (see :mod:`sinks.privacy`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sinks.errors import MigrationError

__all__ = ["Migration", "MIGRATIONS", "apply_migrations", "TABLES"]


class _Commands(Protocol):
    def command(self, cmd: str) -> object: ...
    def query(self, query: str) -> object: ...


#: A step of a migration: an idempotent SQL statement (``{db}`` is the database), or a
#: function of (client, database) for a step SQL alone cannot make idempotent.
Step = str | Callable[[Any, str], None]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[Step, ...]


_TS = "DateTime64(3, 'UTC')"

_FOUNDATION = Migration(
    1,
    "events and failed events",
    (
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.events (
            event_id UUID,
            event_type LowCardinality(String),
            occurred_at {_TS},
            member_id String COMMENT 'pseudonym: HMAC-SHA256 of the member id',
            community_id LowCardinality(String),
            channel LowCardinality(String),
            schema_version LowCardinality(String),
            product_line LowCardinality(String) COMMENT 'purchase events, else empty',
            amount Float64 COMMENT 'premium, claim amount or points, by event type',
            properties String COMMENT 'typed properties as JSON (no free text)',
            source_topic LowCardinality(String),
            source_partition UInt16,
            source_offset UInt64,
            ingested_at {_TS},
            INDEX idx_event_id event_id TYPE bloom_filter(0.001) GRANULARITY 1,
            INDEX idx_member member_id TYPE bloom_filter(0.01) GRANULARITY 4
        ) ENGINE = ReplacingMergeTree
        PARTITION BY toYYYYMM(occurred_at)
        ORDER BY (event_type, occurred_at, event_id)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.failed_events (
            failed_at {_TS},
            source_topic LowCardinality(String),
            source_partition UInt16,
            source_offset UInt64,
            reason LowCardinality(String),
            error_class LowCardinality(String),
            detail String COMMENT 'what is wrong, never the values',
            event_type LowCardinality(String) COMMENT 'if it could be read',
            payload_bytes UInt32,
            payload_sha256 String,
            key_pseudonym String
        ) ENGINE = ReplacingMergeTree
        ORDER BY (source_topic, source_partition, source_offset, payload_sha256)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
    ),
)

_SCORE_COLUMNS = f"""
            member_id String,
            scored_at {_TS},
            trigger LowCardinality(String),
            engagement_score Float32,
            engagement_tier LowCardinality(String),
            churn_probability Float32,
            churn_risk LowCardinality(String),
            churn_model LowCardinality(String),
            conversion_probability Nullable(Float32),
            lifecycle_stage LowCardinality(String),
            top_drivers Array(Tuple(feature String, contribution Float32)),
            model_version LowCardinality(String),
            last_event_at {_TS},
            community_id LowCardinality(String),
            annual_premium Float64,
            active_policies UInt16,
            version UInt64 COMMENT 'orders a member''s records: event time in microseconds'
"""

_SCORING = Migration(
    2,
    "scores, lifecycle, model quality, state checkpoints",
    (
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.member_scores ({_SCORE_COLUMNS})
        ENGINE = ReplacingMergeTree(version)
        ORDER BY member_id
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.score_history ({_SCORE_COLUMNS})
        ENGINE = MergeTree
        PARTITION BY toYYYYMM(scored_at)
        ORDER BY (member_id, scored_at)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.lifecycle_transitions (
            member_id String,
            at {_TS},
            from_stage LowCardinality(String),
            to_stage LowCardinality(String),
            cause_event_type LowCardinality(String),
            community_id LowCardinality(String)
        ) ENGINE = ReplacingMergeTree
        ORDER BY (member_id, at, to_stage)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.model_metrics (
            model LowCardinality(String),
            model_version LowCardinality(String),
            at {_TS},
            labels_seen UInt64,
            roc_auc Nullable(Float64),
            log_loss Nullable(Float64),
            calibration_error Nullable(Float64),
            positive_rate Nullable(Float64),
            drift_detected UInt8,
            promoted UInt8
        ) ENGINE = ReplacingMergeTree
        ORDER BY (model, at, model_version)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        """
        CREATE TABLE IF NOT EXISTS {db}.member_state (
            member_id String COMMENT 'pseudonym',
            source_partition UInt16,
            version UInt64,
            state String COMMENT 'AES-GCM sealed JSON of the member state'
        ) ENGINE = ReplacingMergeTree(version)
        ORDER BY member_id
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.model_checkpoints (
            at {_TS},
            saved_at {_TS},
            version UInt64,
            blob String COMMENT 'pickled models, base64'
        ) ENGINE = MergeTree
        ORDER BY version
        TTL toDateTime(saved_at) + INTERVAL 1 DAY
        """,
    ),
)

_ALERTS = Migration(
    3,
    "alerts",
    (
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.alerts (
            alert_id String COMMENT 'deterministic: rule, subject, episode and status',
            rule LowCardinality(String),
            severity LowCardinality(String),
            status LowCardinality(String) COMMENT 'fired or resolved',
            subject_type LowCardinality(String) COMMENT 'member or community',
            subject_id String COMMENT 'member pseudonym or community id',
            value Float64,
            threshold Float64,
            raised_at {_TS} COMMENT 'event time',
            context String COMMENT 'JSON',
            emitted_at {_TS}
        ) ENGINE = ReplacingMergeTree
        ORDER BY (rule, subject_id, raised_at, alert_id)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
    ),
)

_BI_VIEWS = Migration(
    4,
    "BI views",
    (
        """
        CREATE VIEW IF NOT EXISTS {db}.community_daily_health AS
        SELECT e.day AS day, e.community_id AS community_id,
               e.active_members AS active_members, e.events AS events,
               s.avg_engagement_score AS avg_engagement_score
        FROM (
            SELECT toDate(occurred_at) AS day, community_id,
                   uniqExact(member_id) AS active_members, count() AS events
            FROM {db}.events WHERE community_id != '' GROUP BY day, community_id
        ) AS e
        LEFT JOIN (
            SELECT toDate(scored_at) AS day, community_id,
                   avg(engagement_score) AS avg_engagement_score
            FROM {db}.score_history WHERE community_id != '' GROUP BY day, community_id
        ) AS s ON e.day = s.day AND e.community_id = s.community_id
        """,
        """
        CREATE VIEW IF NOT EXISTS {db}.lifecycle_funnel AS
        SELECT stage, count() AS members FROM (
            SELECT member_id, argMax(lifecycle_stage, version) AS stage
            FROM {db}.member_scores GROUP BY member_id
        ) GROUP BY stage
        """,
        """
        CREATE VIEW IF NOT EXISTS {db}.cohort_retention AS
        SELECT cohort_month, months_since_join,
               uniqExact(member_id) AS active_members,
               any(cohort_size) AS cohort_size,
               round(active_members / cohort_size, 4) AS retention
        FROM (
            SELECT a.member_id AS member_id, c.cohort_month AS cohort_month,
                   c.cohort_size AS cohort_size,
                   dateDiff('month', c.cohort_month, toStartOfMonth(a.occurred_at))
                       AS months_since_join
            FROM {db}.events AS a
            INNER JOIN (
                SELECT member_id, cohort_month, count() OVER (PARTITION BY cohort_month)
                    AS cohort_size
                FROM (SELECT member_id, toStartOfMonth(min(occurred_at)) AS cohort_month
                      FROM {db}.events GROUP BY member_id)
            ) AS c ON a.member_id = c.member_id
        ) GROUP BY cohort_month, months_since_join
        """,
        """
        CREATE VIEW IF NOT EXISTS {db}.nps_csat AS
        SELECT toStartOfWeek(occurred_at) AS week, community_id,
               countIf(JSONHas(properties, 'nps') AND JSONExtractInt(properties, 'nps') >= 0)
                   AS nps_responses,
               round(100 * (countIf(JSONExtractInt(properties, 'nps') >= 9
                                    AND JSONHas(properties, 'nps'))
                      - countIf(JSONExtractInt(properties, 'nps') <= 6
                                AND JSONHas(properties, 'nps')))
                     / greatest(nps_responses, 1), 1) AS nps,
               countIf(JSONExtractInt(properties, 'csat') > 0) AS csat_responses,
               round(avgIf(JSONExtractInt(properties, 'csat'),
                           JSONExtractInt(properties, 'csat') > 0), 2) AS csat
        FROM {db}.events WHERE event_type = 'survey_answered'
        GROUP BY week, community_id
        """,
        """
        CREATE VIEW IF NOT EXISTS {db}.channel_contribution AS
        SELECT channel,
               count() AS events,
               uniqExact(member_id) AS members,
               countIf(event_type IN ('policy_purchased', 'policy_renewed')) AS purchases,
               sumIf(amount, event_type IN ('policy_purchased', 'policy_renewed')) AS premium,
               countIf(event_type IN ('referral_sent', 'referral_converted', 'content_shared'))
                   AS word_of_mouth
        FROM {db}.events GROUP BY channel
        """,
    ),
)

_ALERT_STATE = Migration(
    5,
    "alert engine state in model checkpoints",
    (
        "ALTER TABLE {db}.model_checkpoints ADD COLUMN IF NOT EXISTS "
        "alerts_state String DEFAULT '' COMMENT 'AES-GCM sealed JSON of the alert engine'",
    ),
)

_ONE_CHECKPOINT = Migration(
    6,
    "models and alert engine checkpointed with the member states, in one insert",
    # The models now travel as a row of member_state (see streams.scoring), so a batch's
    # states and models land together; the separate table (and its 1-day TTL, which
    # could expire the only checkpoint of a worker stopped for a day) goes.
    ("DROP TABLE IF EXISTS {db}.model_checkpoints",),
)


_TAGS = (
    "task UInt16 DEFAULT 0 COMMENT 'the input partition (task) that wrote the row'",
    "gen UInt64 DEFAULT 0 COMMENT 'the generation of that task (a new one per restore)'",
    "seq UInt64 DEFAULT 0 COMMENT 'the checkpoint of that task the row belongs to'",
)


def _add_tags(table: str, with_output_id: bool) -> tuple[str, ...]:
    columns = list(_TAGS)
    if with_output_id:
        columns.append("output_id String DEFAULT '' COMMENT 'deterministic identity of the row'")
    return tuple(
        f"ALTER TABLE {{db}}.{table} ADD COLUMN IF NOT EXISTS {column}" for column in columns
    )


_APPEND_ONLY = {
    "lifecycle_transitions": f"""
        CREATE TABLE IF NOT EXISTS {{db}}.{{table}} (
            member_id String,
            at {_TS},
            from_stage LowCardinality(String),
            to_stage LowCardinality(String),
            cause_event_type LowCardinality(String),
            community_id LowCardinality(String),
            output_id String,
            {", ".join(_TAGS)}
        ) ENGINE = MergeTree
        ORDER BY (member_id, at)
        """,
    "model_metrics": f"""
        CREATE TABLE IF NOT EXISTS {{db}}.{{table}} (
            model LowCardinality(String),
            model_version LowCardinality(String),
            at {_TS},
            labels_seen UInt64,
            roc_auc Nullable(Float64),
            log_loss Nullable(Float64),
            calibration_error Nullable(Float64),
            positive_rate Nullable(Float64),
            drift_detected UInt8,
            promoted UInt8,
            output_id String,
            {", ".join(_TAGS)}
        ) ENGINE = MergeTree
        ORDER BY (model, at)
        """,
    "alerts": f"""
        CREATE TABLE IF NOT EXISTS {{db}}.{{table}} (
            alert_id String COMMENT 'deterministic: rule, subject, episode and status',
            rule LowCardinality(String),
            severity LowCardinality(String),
            status LowCardinality(String) COMMENT 'fired or resolved',
            subject_type LowCardinality(String) COMMENT 'member or community',
            subject_id String COMMENT 'member pseudonym or community id',
            value Float64,
            threshold Float64,
            raised_at {_TS} COMMENT 'event time',
            context String COMMENT 'JSON',
            emitted_at {_TS},
            {", ".join(_TAGS)}
        ) ENGINE = MergeTree
        ORDER BY (rule, subject_id, raised_at)
        """,
}


def _rebuild_append_only(client: Any, database: str) -> None:
    """Rebuild the tables that must keep every write as plain MergeTree (they were
    ReplacingMergeTree, which collapses repeated rows and so hides a doubled output).
    Resumable: a crash between the steps is finished by the next start."""
    for table, ddl in _APPEND_ONLY.items():
        old = f"{table}_before_v7"

        def exists(name: str) -> bool:
            return bool(
                client.query(
                    "SELECT count() FROM system.tables WHERE database = {d:String} "
                    "AND name = {t:String}",
                    parameters={"d": database, "t": name},
                ).result_rows[0][0]
            )

        def engine(name: str) -> str:
            return str(
                client.query(
                    "SELECT engine FROM system.tables WHERE database = {d:String} "
                    "AND name = {t:String}",
                    parameters={"d": database, "t": name},
                ).result_rows[0][0]
            )

        if exists(table) and not exists(old) and engine(table) != "MergeTree":
            client.command(f"RENAME TABLE {database}.{table} TO {database}.{old}")
        client.command(ddl.format(db=database, table=table))
        if exists(old):
            columns = [
                str(row[0])
                for row in client.query(
                    "SELECT name FROM system.columns WHERE database = {d:String} "
                    "AND table = {t:String}",
                    parameters={"d": database, "t": old},
                ).result_rows
            ]
            names = ", ".join(columns)
            empty = not client.query(f"SELECT count() FROM {database}.{table}").result_rows[0][0]
            if empty:
                client.command(
                    f"INSERT INTO {database}.{table} ({names}) SELECT {names} FROM {database}.{old}"
                )
            client.command(f"DROP TABLE {database}.{old}")


_TASKS = Migration(
    7,
    "partition tasks: checkpoint tags and output identities, append-only outputs, task state",
    (
        *_add_tags("events", False),
        *_add_tags("failed_events", False),
        *_add_tags("member_scores", True),
        *_add_tags("score_history", True),
        _rebuild_append_only,
        """
        CREATE TABLE IF NOT EXISTS {db}.task_state (
            task UInt16 COMMENT 'input partition',
            key String COMMENT 'member pseudonym, or ~commit for the commit record',
            gen UInt64,
            seq UInt64 COMMENT 'checkpoint sequence of the task: the newest row wins',
            state String COMMENT 'AES-GCM sealed JSON; empty: erased member'
        ) ENGINE = ReplacingMergeTree(seq)
        ORDER BY (task, key)
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        # one global checkpoint per worker (PR 3) cannot be split into partition tasks:
        # members restart from their events (see README, upgrading)
        "DROP TABLE IF EXISTS {db}.member_state",
    ),
)

_WEBHOOK_OUTBOX = Migration(
    8,
    "webhook outbox and delivery log",
    (
        # Written in the same sink batch as the alerts (before the ack): a crash
        # redelivers the batch, which writes the same rows again (same alert_id, the
        # Idempotency-Key). No member id in clear: the payload names the member by
        # pseudonym; a rule that opts in to the member id gets it sealed (AES-GCM).
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.webhook_outbox (
            alert_id String COMMENT 'the Idempotency-Key of every attempt',
            webhook LowCardinality(String),
            rule LowCardinality(String),
            subject_type LowCardinality(String),
            subject_id String COMMENT 'member pseudonym or community id',
            member_sealed String COMMENT 'AES-GCM sealed member id (rules with send_member_id)',
            payload String COMMENT 'JSON body, without the member id',
            source_partition Int32 COMMENT 'input partition of the member, -1 if none',
            created_at {_TS}
        ) ENGINE = ReplacingMergeTree
        ORDER BY (webhook, alert_id)
        TTL toDateTime(created_at) + INTERVAL 30 DAY
        SETTINGS non_replicated_deduplication_window = 1000
        """,
        # Append-only: one row per attempt. A (webhook, alert_id) with a delivered or
        # failed row is done; a restarted sender resumes the rest where they were.
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.webhook_deliveries (
            alert_id String,
            webhook LowCardinality(String),
            attempt UInt16,
            outcome LowCardinality(String) COMMENT 'delivered, retried or failed (gave up)',
            status_code UInt16 COMMENT 'HTTP status, 0 without a response',
            error String COMMENT 'error class or HTTP status, never the URL or the secret',
            at {_TS}
        ) ENGINE = MergeTree
        ORDER BY (webhook, alert_id, at)
        TTL toDateTime(at) + INTERVAL 60 DAY
        """,
    ),
)

_CURRENT_SCORES = Migration(
    9,
    "member_scores_current view: which latest member scores are current",
    (
        # Each member's latest row and whether readers may compare it with the others:
        # ``as_of`` is the newest daily batch (every member scored at one event-time
        # midnight, see README, Model quality), ``serving_version`` the model the
        # member's task serves now (the version of the task's newest score; each task
        # has its own models); ``is_current``: scored at or after ``as_of`` by that
        # version. ``age_days`` counts from the newest score of any member.
        """
        CREATE VIEW IF NOT EXISTS {db}.member_scores_current AS
        SELECT s.*,
               n.as_of AS as_of,
               t.serving_version AS serving_version,
               dateDiff('millisecond', s.scored_at, n.newest) / 86400000.0 AS age_days,
               s.scored_at >= n.as_of AND s.model_version = t.serving_version AS is_current
        FROM (SELECT * FROM {db}.member_scores FINAL) AS s
        CROSS JOIN (
            SELECT maxIf(scored_at, trigger = 'daily') AS as_of, max(scored_at) AS newest
            FROM {db}.member_scores
        ) AS n
        LEFT JOIN (
            SELECT task AS serving_task, argMax(model_version, version) AS serving_version
            FROM {db}.member_scores GROUP BY task
        ) AS t ON s.task = t.serving_task
        """,
    ),
)

_ERASURE_FEED = Migration(
    10,
    "erasure feed position",
    (
        # How far this ClickHouse carried out the erasure feed of a broker (its cluster
        # id) and topic: a restart goes on from there (streams.erasure_feed).
        f"""
        CREATE TABLE IF NOT EXISTS {{db}}.erasure_feed (
            broker String,
            topic String,
            position UInt64 COMMENT 'the next feed offset to carry out',
            at {_TS} DEFAULT now64(3)
        ) ENGINE = ReplacingMergeTree(position)
        ORDER BY (broker, topic)
        """,
    ),
)

MIGRATIONS: tuple[Migration, ...] = (
    _FOUNDATION,
    _SCORING,
    _ALERTS,
    _BI_VIEWS,
    _ALERT_STATE,
    _ONE_CHECKPOINT,
    _TASKS,
    _WEBHOOK_OUTBOX,
    _CURRENT_SCORES,
    _ERASURE_FEED,
)

#: Tables Pulse writes, in the order a batch is flushed: the records derived from
#: events, the failures, the events (the de-duplication record), and ``task_state``
#: last: its insert holds the member states and each task's commit record, so a
#: checkpoint is committed (with ClickHouse as the record) exactly when it lands.
#: Rows of a checkpoint whose commit never landed are rolled back at the next restore
#: (see :mod:`streams.checkpoint_store`).
TABLES: tuple[str, ...] = (
    "member_scores",
    "score_history",
    "lifecycle_transitions",
    "model_metrics",
    "alerts",
    "webhook_outbox",  # with its alerts, before the ack (helper: security)
    "failed_events",
    "events",
    "task_state",
)


def apply_migrations(client: _Commands, database: str) -> list[int]:
    """Create the database and apply missing migrations; return the versions applied."""
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.command(
            f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
            f"(version UInt32, name String, applied_at {_TS} DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {
            int(row[0])
            for row in client.query(  # type: ignore[attr-defined]
                f"SELECT version FROM {database}.schema_migrations"
            ).result_rows
        }
    except Exception as exc:
        raise MigrationError(f"cannot prepare database {database}: {exc}") from exc
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements:
            try:
                if callable(statement):
                    statement(client, database)
                else:
                    client.command(statement.format(db=database))
            except Exception as exc:
                raise MigrationError(
                    f"migration {migration.version} ({migration.name}) failed: {exc}"
                ) from exc
        client.command(
            f"INSERT INTO {database}.schema_migrations (version, name) "
            f"VALUES ({migration.version}, '{migration.name}')"
        )
        applied.append(migration.version)
    return applied
