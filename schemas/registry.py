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
    "read_object",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FUTURE_SKEW",
    "DEFAULT_MIN_EVENT_TIME",
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
#: The event-time floor: older events are schema violations (``PULSE_MIN_EVENT_TIME``).
DEFAULT_MIN_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)


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


def read_object(raw: bytes) -> dict[str, Any]:
    """Parse ``raw`` as one UTF-8 JSON object, whatever it holds, or raise ``InvalidJson``.

    Every parser limit is a typed rejection, never an untyped exception: invalid
    UTF-8, nesting deeper than the parser's recursion limit, integer literals over
    Python's 4,300 digits, ``NaN``/``Infinity`` (not JSON). One leading UTF-8 byte
    order mark is ignored, as RFC 8259 allows.

    >>> read_object(b'{"event_type": "quiz_answered"}')
    {'event_type': 'quiz_answered'}
    >>> read_object(b"[" * 5000 + b"]" * 5000)
    Traceback (most recent call last):
    ...
    schemas.errors.InvalidJson: invalid_json: nested too deeply for the JSON parser
    """
    return _read_object(_utf8(raw))


def _utf8(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"not UTF-8 (invalid byte at position {exc.start})") from None
    return text[1:] if text.startswith("\ufeff") else text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_object(text: str) -> dict[str, Any]:
    try:
        document: Any = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"JSONDecodeError at position {exc.pos}") from None
    except RecursionError:
        raise InvalidJson("nested too deeply for the JSON parser") from None
    except ValueError as exc:  # integer literals over 4,300 digits, NaN and Infinity
        reason = "a number is too long" if "digits" in str(exc) else "NaN or Infinity"
        raise InvalidJson(f"{reason} (not accepted as JSON)") from None
    except Exception as exc:  # any other parser limit (MemoryError, ...) is still a rejection
        raise InvalidJson(f"the JSON parser failed ({type(exc).__name__})") from None
    if not isinstance(document, dict):
        raise InvalidJson(f"expected a JSON object, got {type(document).__name__}")
    return document


def _validate(model: type[EventBase], text: str) -> EventBase:
    try:
        # Strict: "5" is not an int. JSON's strings still stand for UUIDs and datetimes.
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        if all(e["type"] == "json_invalid" for e in exc.errors()):  # pydantic's parser limits
            raise InvalidJson(_describe(exc)) from None
        raise SchemaViolation(_describe(exc)) from None
    except Exception as exc:  # never an untyped exception out of validation
        raise SchemaViolation(f"event: validation failed ({type(exc).__name__})") from None


def decode_event(
    raw: bytes,
    *,
    key: bytes | None = None,
    stream: StreamName | None = None,
    now: datetime | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
    min_event_time: datetime = DEFAULT_MIN_EVENT_TIME,
    require_key: bool = False,
) -> EventBase:
    """Validate one message and return the typed event, or raise an ``EventRejected``.

    Whatever ``raw`` holds, the result is an event or an ``EventRejected`` with
    one of :data:`~schemas.errors.REJECT_REASONS`, never another exception.

    ``key`` (the Kafka key), when given, must equal ``member_id``; with
    ``require_key`` a missing (or empty) key is a ``KeyMismatch`` too.
    ``stream``, when given, must be the stream that carries the event type.
    ``occurred_at`` must lie between ``min_event_time`` (the floor) and ``now``
    plus ``max_future_skew`` (the ceiling), and be representable in UTC; ``now``
    defaults to the wall clock (the one place where ingestion, not event, time is
    the right reference).
    """
    if len(raw) > max_bytes:
        raise Oversize(f"{len(raw)} bytes exceeds the limit of {max_bytes}")
    text = _utf8(raw)
    document = _read_object(text)
    event_type = document.get("event_type")
    if not isinstance(event_type, str) or event_type not in EVENT_MODELS:
        shown = repr(event_type)[:40] if isinstance(event_type, str) else "missing or not a string"
        raise UnknownEventType(f"{shown} is not an event type")
    if stream is not None and _STREAM[event_type] != stream:
        raise WrongTopic(f"{event_type} belongs on the {_STREAM[event_type]} topic, not {stream}")
    event = _validate(EVENT_MODELS[event_type], text)
    _check_time(event.occurred_at, now, max_future_skew, min_event_time)
    if require_key and not key:
        raise KeyMismatch("missing key")
    if key is not None and key.decode("utf-8", "replace") != event.member_id:
        raise KeyMismatch("the message key is not the event's member_id")
    return event


def _check_time(
    occurred_at: datetime, now: datetime | None, max_future_skew: timedelta, floor: datetime
) -> None:
    """The floor and the ceiling of event time; dates that have no UTC form are violations."""
    try:
        at = occurred_at.astimezone(UTC)
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+05:00 is in year 0 in UTC
        raise SchemaViolation("occurred_at: out of range once converted to UTC") from None
    if at < floor:
        raise SchemaViolation(
            f"occurred_at: before the earliest accepted event time {floor.isoformat()}"
        )
    reference = now if now is not None else datetime.now(UTC)
    if at - reference > max_future_skew:
        ahead = (at - reference).total_seconds()
        raise FutureTimestamp(
            f"occurred_at is {ahead:.0f}s ahead of ingestion time "
            f"(allowed skew {max_future_skew.total_seconds():.0f}s)"
        )
