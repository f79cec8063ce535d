"""What a partition task sends out for its scores and alerts, besides their rows.

A score becomes a ``pulse.scores`` message; an alert becomes an ``alerts`` row, a
``pulse.alerts`` message, a webhook outbox row and a count. All of it joins the
task's open checkpoint, on the task's own partition of each topic (a restore reads
what a checkpoint that never committed produced there: :mod:`streams.task`).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from scoring.alerts import AlertRecord
from scoring.records import ScoreRecord
from sinks.rows import Tags, alert_row, output_id
from streams.checkpoint import Checkpoint
from streams.task_context import TaskContext
from streams.webhooks import Consent, outbox_rows

__all__ = ["publish_score", "emit_alerts"]

#: Columns of a score row that are checkpoint bookkeeping, not part of the message.
_NOT_IN_MESSAGE = ("version", "task", "gen", "seq")


def publish_score(
    ctx: TaskContext, partition: int, record: ScoreRecord, row: dict[str, Any], tags: Tags
) -> bool:
    """Queue the score's ``pulse.scores`` message; False if a checkpoint that never
    committed produced it already. The topic is internal, so it keeps the member id;
    ClickHouse never does."""
    message = {
        **{k: v for k, v in row.items() if k not in _NOT_IN_MESSAGE},
        "member_id": record.member_id,
        "scored_at": record.scored_at.isoformat(),
        "last_event_at": record.last_event_at.isoformat(),
    }
    return ctx.outputs.produce(
        ctx.scores_topic,
        record.member_id.encode(),
        to_json(message, inf_nan_mode="constants"),
        tags=tags,
        identity=row["output_id"],
        partition=partition,
    )


def emit_alerts(
    ctx: TaskContext,
    checkpoint: Checkpoint,
    partition: int,
    alerts: list[AlertRecord],
    marketing_allowed: Consent,
) -> int:
    """Rows, messages, webhook outbox rows and counts of ``alerts``; how many fired.

    ``marketing_allowed``: the engine's record of whom a marketing webhook may name."""
    # a member alert's id is derived from the pseudonym: an id over the member id in
    # clear could be matched against guessed member ids
    alerts = [
        replace(
            a,
            alert_id=output_id(
                "alert", a.rule, ctx.pseudonym(a.subject_id), a.episode_start.isoformat(), a.status
            ),
        )
        if a.subject_type == "member"
        else a
        for a in alerts
    ]
    tags = checkpoint.tags
    now = datetime.now(UTC)
    rows = []
    fired = 0
    for alert in alerts:
        rows.append(alert_row(alert, pseudonym=ctx.pseudonym, emitted_at=now, tags=tags))
        row = alert.to_row()
        message = {
            **{k: v for k, v in row.items() if k != "webhook"},
            "raised_at": alert.raised_at.isoformat(),
            "episode_start": alert.episode_start.isoformat(),
            "context": alert.context,
        }
        value = json.dumps(message, default=str, separators=(",", ":")).encode()
        ctx.outputs.produce(
            ctx.alerts_topic,
            alert.subject_id.encode(),
            value,
            tags=tags,
            identity=alert.alert_id,
            partition=partition,
        )
        counter = (
            ctx.metrics.alerts_fired if alert.status == "fired" else ctx.metrics.alerts_resolved
        )
        counter.labels(alert.rule, alert.severity).inc()
        fired += alert.status == "fired"
        if alert.subject_type == "member":
            checkpoint.members.add(alert.subject_id)
    checkpoint.add_rows("alerts", rows)
    # webhooks go through a durable outbox written with the alerts, before the ack
    members = {a.subject_id: partition for a in alerts if a.subject_type == "member"}
    checkpoint.add_rows(
        "webhook_outbox",
        outbox_rows(
            alerts,
            ctx.rules,
            ctx.pseudonym,
            marketing_allowed,
            sealer=ctx.sealer,
            partition_of=members,
            now=now,
        ),
    )
    return fired
