"""How Pulse's records become ClickHouse rows: the one place that pseudonymises.

Every function takes a :class:`~sinks.privacy.Pseudonymizer`; a member id
passes through it before it is written.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from schemas.envelope import EventBase
from schemas.errors import MAX_DETAIL_CHARS, EventRejected, clean_text
from schemas.registry import read_object
from sinks.privacy import Pseudonymizer

__all__ = ["event_row", "failed_row", "utc"]

_AMOUNT_FIELDS = ("premium", "amount_paid", "amount", "estimated_premium", "points")


def utc(moment: datetime) -> datetime:
    """Naive UTC datetime, the form clickhouse-connect writes into DateTime64('UTC')."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def event_row(
    event: EventBase,
    *,
    topic: str,
    partition: int,
    offset: int,
    pseudonym: Pseudonymizer,
    ingested_at: datetime,
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
    }
