"""Versioned event contracts: the envelope, every event type, and how bytes become events."""

from __future__ import annotations

from schemas.envelope import SCHEMA_VERSION, Channel, EventBase, ProductLine
from schemas.errors import REJECT_REASONS, EventRejected, PulseError
from schemas.registry import (
    EVENT_MODELS,
    EVENT_TYPES,
    Event,
    StreamName,
    decode_event,
    stream_of,
)

__all__ = [
    "SCHEMA_VERSION",
    "Channel",
    "ProductLine",
    "EventBase",
    "Event",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "StreamName",
    "decode_event",
    "stream_of",
    "PulseError",
    "EventRejected",
    "REJECT_REASONS",
]
