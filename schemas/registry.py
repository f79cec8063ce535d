"""The event union, topic routing and the one way raw bytes become an event.

>>> raw = (b'{"event_id": "0b6f3c1e-8a53-4b8e-9a43-3f1c2b0f7e11",'
...        b' "event_type": "quiz_answered", "occurred_at": "2026-03-01T09:30:00+08:00",'
...        b' "member_id": "m-1", "channel": "app",'
...        b' "properties": {"quiz_id": "q7", "questions": 5, "correct": 4}}')
>>> event = decode_event(raw)
>>> event.event_type, event.properties.correct, stream_of(event.event_type)
('quiz_answered', 4, 'interactions')
>>> decode_event(b'{"event_type": "teleported"}')
Traceback (most recent call last):
...
schemas.errors.UnknownEventType: unknown_event_type: 'teleported' is not an event type
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError

from schemas.envelope import EventBase
from schemas.errors import (
    FutureTimestamp,
    InvalidJson,
    KeyMismatch,
    Oversize,
    SchemaViolation,
    UnknownEventType,
    WrongTopic,
)
from schemas.interactions import INTERACTION_TYPES
from schemas.purchases import PURCHASE_TYPES

__all__ = [
    "Event",
    "EVENT_TYPES",
    "EVENT_MODELS",
    "EVENT_ADAPTER",
    "StreamName",
    "stream_of",
    "decode_event",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FUTURE_SKEW",
]

StreamName = Literal["interactions", "purchases"]

EVENT_MODELS: dict[str, type[EventBase]] = {
    model.model_fields["event_type"].annotation.__args__[0]: model  # type: ignore[union-attr]
    for model in (*INTERACTION_TYPES, *PURCHASE_TYPES)
}
EVENT_TYPES: tuple[str, ...] = tuple(EVENT_MODELS)
_STREAM: dict[str, StreamName] = {
    name: ("interactions" if model in INTERACTION_TYPES else "purchases")
    for name, model in EVENT_MODELS.items()
}

# The union is built from the registry, so mypy cannot see its members.
Event = Annotated[  # type: ignore[valid-type]
    Union[tuple(EVENT_MODELS.values())],  # noqa: UP007
    Field(discriminator="event_type"),
]
EVENT_ADAPTER: TypeAdapter[EventBase] = TypeAdapter(Event)  # type: ignore[arg-type]

DEFAULT_MAX_BYTES = 64 * 1024
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)


def stream_of(event_type: str) -> StreamName:
    """Which input stream (and so topic) carries ``event_type``."""
    try:
        return _STREAM[event_type]
    except KeyError:
        raise UnknownEventType(f"{event_type!r} is not an event type") from None


def _describe(error: ValidationError) -> str:
    """Field paths and messages, never the offending values (they may be personal data)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts[:5]) + (f" (+{len(parts) - 5} more)" if len(parts) > 5 else "")


def decode_event(
    raw: bytes,
    *,
    key: bytes | None = None,
    stream: StreamName | None = None,
    now: datetime | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
) -> EventBase:
    """Validate one message and return the typed event, or raise an ``EventRejected``.

    ``key`` (the Kafka key), when given, must equal ``member_id``; ``stream``,
    when given, must be the stream that carries the event type. ``now`` is the
    reference for the future-timestamp check (defaults to the wall clock: it is
    the one place where ingestion, not event, time is the right reference).
    """
    if len(raw) > max_bytes:
        raise Oversize(f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    try:
        document: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidJson(f"{type(exc).__name__} at position {getattr(exc, 'pos', '?')}") from None
    if not isinstance(document, dict):
        raise InvalidJson(f"expected a JSON object, got {type(document).__name__}")
    event_type = document.get("event_type")
    if not isinstance(event_type, str) or event_type not in EVENT_MODELS:
        shown = repr(event_type)[:40] if isinstance(event_type, str) else "missing or not a string"
        raise UnknownEventType(f"{shown} is not an event type")
    if stream is not None and _STREAM[event_type] != stream:
        raise WrongTopic(f"{event_type} belongs on the {_STREAM[event_type]} topic, not {stream}")
    try:
        # Strict: "5" is not an int. JSON's strings still stand for UUIDs and datetimes.
        event = EVENT_MODELS[event_type].model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise SchemaViolation(_describe(exc)) from None
    reference = now if now is not None else datetime.now(UTC)
    if event.occurred_at - reference > max_future_skew:
        ahead = (event.occurred_at - reference).total_seconds()
        raise FutureTimestamp(
            f"occurred_at is {ahead:.0f}s ahead of ingestion time "
            f"(allowed skew {max_future_skew.total_seconds():.0f}s)"
        )
    if key is not None and key.decode("utf-8", "replace") != event.member_id:
        raise KeyMismatch("the message key is not the event's member_id")
    return event
