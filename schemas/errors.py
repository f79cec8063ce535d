"""Pulse's root exception and the typed reasons an event is rejected."""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "PulseError",
    "EventRejected",
    "Oversize",
    "InvalidJson",
    "UnknownEventType",
    "SchemaViolation",
    "FutureTimestamp",
    "KeyMismatch",
    "WrongTopic",
    "REJECT_REASONS",
    "MAX_DETAIL_CHARS",
    "clean_text",
]


#: Longest ``detail`` kept (a header value, a ClickHouse column, a log line).
MAX_DETAIL_CHARS = 1000


def clean_text(text: str, limit: int) -> str:
    """``text`` as valid UTF-8 (lone surrogates from JSON escapes replaced), at most ``limit``
    characters: safe to encode for a Kafka header, a log line or a ClickHouse String.

    >>> clean_text("a\\ud800b", 10), clean_text("abcdef", 3)
    ('a?b', 'abc')
    """
    return text[:limit].encode("utf-8", "replace").decode("utf-8")


class PulseError(Exception):
    """Root of every error Pulse raises on purpose."""


class EventRejected(PulseError):
    """An input message that cannot become a valid event.

    ``reason`` is a short, stable, bounded code (a metric label and a
    ClickHouse column); ``detail`` says what is wrong without repeating the
    payload's values, so no personal data reaches logs or tables.
    """

    reason: ClassVar[str] = "rejected"

    def __init__(self, detail: str) -> None:
        detail = clean_text(detail, MAX_DETAIL_CHARS)
        super().__init__(f"{self.reason}: {detail}")
        self.detail = detail


class Oversize(EventRejected):
    """The message is larger than the configured payload limit."""

    reason = "oversize"


class InvalidJson(EventRejected):
    """The message is not a UTF-8 JSON object."""

    reason = "invalid_json"


class UnknownEventType(EventRejected):
    """``event_type`` is missing or names no event type of this schema version."""

    reason = "unknown_event_type"


class SchemaViolation(EventRejected):
    """A field is missing, has the wrong type or is out of range."""

    reason = "schema_violation"


class FutureTimestamp(EventRejected):
    """``occurred_at`` lies further in the future than the allowed clock skew."""

    reason = "future_timestamp"


class KeyMismatch(EventRejected):
    """The Kafka key is not the event's ``member_id`` (it would break partitioning)."""

    reason = "key_mismatch"


class WrongTopic(EventRejected):
    """A purchase arrived on the interactions topic, or the other way round."""

    reason = "wrong_topic"


REJECT_REASONS: tuple[str, ...] = tuple(
    cls.reason
    for cls in (
        Oversize,
        InvalidJson,
        UnknownEventType,
        SchemaViolation,
        FutureTimestamp,
        KeyMismatch,
        WrongTopic,
    )
)
