"""How Pulse's records become ClickHouse rows: the one place that pseudonymises.

Every function takes a :class:`~sinks.privacy.Pseudonymizer`; a member id
passes through it before it is written.

Every row a task writes carries the checkpoint it belongs to (:class:`Tags`:
task, generation, sequence), so rows of a checkpoint that never committed can be
found and rolled back (:mod:`streams.checkpoint_store`). Every derived row also
carries a deterministic ``output_id``: the same cause gives the same id, in a
re-run or on another worker, so a reader of a Kafka topic can de-duplicate and a
test can count.

>>> output_id("score", "0b6f3c1e-8a53-4b8e-9a43-3f1c2b0f7e11") == output_id(
...     "score", "0b6f3c1e-8a53-4b8e-9a43-3f1c2b0f7e11")
True
>>> len(output_id("silence", "ab12", "2026-03-01T00:00:00+00:00", "churn-prior"))
32
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, NamedTuple

from schemas.envelope import EventBase
from schemas.errors import MAX_DETAIL_CHARS, EventRejected, clean_text
from schemas.registry import read_object
from scoring.alerts import AlertRecord
from scoring.records import LifecycleTransition, ModelMetrics, ScoreRecord
from sinks.privacy import Pseudonymizer

__all__ = [
    "Tags",
    "UNTAGGED",
    "output_id",
    "event_row",
    "failed_row",
    "score_row",
    "score_output_id",
    "transition_row",
    "metrics_row",
    "alert_row",
    "utc",
]

_AMOUNT_FIELDS = ("premium", "amount_paid", "amount", "estimated_premium", "points")


class Tags(NamedTuple):
    """The checkpoint a row belongs to: its task (input partition), generation, sequence."""

    task: int
    gen: int
    seq: int

    def columns(self) -> dict[str, int]:
        return {"task": self.task, "gen": self.gen, "seq": self.seq}


#: Rows that belong to no task checkpoint (e.g. lines the broker refused during a replay):
#: sequence 0 is never rolled back.
UNTAGGED = Tags(0, 0, 0)


def output_id(kind: str, *cause: str) -> str:
    """Deterministic identity of an output: 128-bit hex of its kind and cause.

    Causes never hold a member id in clear (pseudonyms and event ids only).
    """
    key = "|".join((kind, *cause)).encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def utc(moment: datetime) -> datetime:
    """Naive UTC datetime, the form clickhouse-connect writes into DateTime64('UTC')."""
    if moment.tzinfo is UTC:  # most are (scoring.clock): no conversion to make
        return moment.replace(tzinfo=None)
    return moment.astimezone(UTC).replace(tzinfo=None)


def _version(moment: datetime) -> int:
    """Row version: event time in microseconds (later record wins in ReplacingMergeTree)."""
    return int(round(moment.timestamp() * 1_000_000))


def event_row(
    event: EventBase,
    *,
    topic: str,
    partition: int,
    offset: int,
    pseudonym: Pseudonymizer,
    ingested_at: datetime,
    tags: Tags = UNTAGGED,
) -> dict[str, Any]:
    """The ``events`` row of a validated event."""
    props = event.properties.model_dump(mode="json")  # type: ignore[attr-defined]
    amount = next((props[f] for f in _AMOUNT_FIELDS if props.get(f) is not None), 0.0)
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,  # type: ignore[attr-defined]
        "occurred_at": utc(event.occurred_at),
        "member_id": pseudonym(event.member_id),
        "community_id": event.community_id or "",
        "channel": event.channel.value,
        "schema_version": event.schema_version,
        "product_line": props.get("product_line") or "",
        "amount": float(amount),
        "properties": json.dumps(props, separators=(",", ":"), sort_keys=True),
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "ingested_at": utc(ingested_at),
        **tags.columns(),
    }


def failed_row(
    raw: bytes,
    *,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    error_class: str,
    detail: str,
    pseudonym: Pseudonymizer,
    failed_at: datetime,
    tags: Tags = UNTAGGED,
) -> dict[str, Any]:
    """The ``failed_events`` row of a rejected message: its shape, never its content."""
    event_type = ""
    try:  # whatever the message holds: read_object raises nothing but InvalidJson
        document = read_object(raw)
        if isinstance(document.get("event_type"), str):
            event_type = clean_text(document["event_type"], 40)
    except EventRejected:
        pass
    return {
        "failed_at": utc(failed_at),
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "reason": reason,
        "error_class": error_class,
        "detail": clean_text(detail, MAX_DETAIL_CHARS),
        "event_type": event_type,
        "payload_bytes": len(raw),
        "payload_sha256": hashlib.sha256(raw).hexdigest(),
        "key_pseudonym": pseudonym(key.decode("utf-8", "replace")) if key else "",
        **tags.columns(),
    }


def score_output_id(record: ScoreRecord, member: str, cause: str | None) -> str:
    """An event's score is named by the event; a re-score by member, moment and model."""
    if cause is not None:
        return output_id("score", cause)
    return output_id(record.trigger, member, record.scored_at.isoformat(), record.model_version)


def score_row(
    record: ScoreRecord, *, pseudonym: Pseudonymizer, cause: str | None, tags: Tags
) -> dict[str, Any]:
    """The ``member_scores`` / ``score_history`` row of a score (``cause``: the event id)."""
    member = pseudonym(record.member_id)
    return {
        "member_id": member,
        "scored_at": utc(record.scored_at),
        "trigger": record.trigger,
        "engagement_score": record.engagement_score,
        "engagement_tier": record.engagement_tier,
        "churn_probability": record.churn_probability,
        "churn_risk": record.churn_risk,
        "churn_model": record.churn_model,
        "conversion_probability": record.conversion_probability,
        "lifecycle_stage": record.lifecycle_stage,
        "top_drivers": [(f, float(c)) for f, c in record.top_drivers],
        "model_version": record.model_version,
        "last_event_at": utc(record.last_event_at),
        "community_id": record.community_id or "",
        "annual_premium": float(record.annual_premium),
        "active_policies": int(record.active_policies),
        "version": _version(record.scored_at),
        "output_id": score_output_id(record, member, cause),
        **tags.columns(),
    }


def transition_row(
    record: LifecycleTransition, *, pseudonym: Pseudonymizer, tags: Tags
) -> dict[str, Any]:
    """The ``lifecycle_transitions`` row: a member moves stage at most once per instant."""
    member = pseudonym(record.member_id)
    return {
        "member_id": member,
        "at": utc(record.at),
        "from_stage": record.from_stage,
        "to_stage": record.to_stage,
        "cause_event_type": record.cause_event_type,
        "community_id": record.community_id or "",
        "output_id": output_id(
            "transition", member, record.at.isoformat(), record.from_stage, record.to_stage
        ),
        **tags.columns(),
    }


def metrics_row(record: ModelMetrics, *, tags: Tags) -> dict[str, Any]:
    """The ``model_metrics`` row of one model-quality report."""
    row = record.to_row()
    row.update(
        at=utc(record.at),
        drift_detected=int(record.drift_detected),
        promoted=int(record.promoted),
        output_id=output_id(  # each task reports its own models: two may agree on the rest
            "metrics",
            str(tags.task),
            record.model,
            record.model_version,
            record.at.isoformat(),
            str(record.labels_seen),
        ),
        **tags.columns(),
    )
    return row


def alert_row(
    alert: AlertRecord, *, pseudonym: Pseudonymizer, emitted_at: datetime, tags: Tags
) -> dict[str, Any]:
    """The ``alerts`` row: a member subject by pseudonym; the alert id is its identity."""
    member = alert.subject_type == "member"
    return {
        "alert_id": alert.alert_id,
        "rule": alert.rule,
        "severity": alert.severity,
        "status": alert.status,
        "subject_type": alert.subject_type,
        "subject_id": pseudonym(alert.subject_id) if member else alert.subject_id,
        "value": float(alert.value),
        "threshold": float(alert.threshold),
        "raised_at": utc(alert.raised_at),
        "context": json.dumps(alert.context, sort_keys=True, default=str),
        "emitted_at": utc(emitted_at),
        **tags.columns(),
    }
