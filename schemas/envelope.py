"""The envelope every event shares, and the vocabularies it uses."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "SCHEMA_VERSION",
    "Channel",
    "ProductLine",
    "EventBase",
    "Properties",
    "Identifier",
    "Currency",
]

#: The schema version this code writes and understands. Readers accept every
#: ``1.x``: minor revisions only add optional fields (see README, "Schema versions").
SCHEMA_VERSION = "1.0"
SCHEMA_MAJOR = 1

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]


class Channel(StrEnum):
    """Where the member acted."""

    APP = "app"
    MINI_PROGRAM = "mini_program"
    WEB = "web"
    AGENT = "agent"
    PARTNER = "partner"


class ProductLine(StrEnum):
    """Insurance product lines."""

    HEALTH = "health"
    ACCIDENT = "accident"
    AUTO = "auto"
    TRAVEL = "travel"
    LIFE = "life"
    PROPERTY = "property"


class Properties(BaseModel):
    """Base of every event type's typed ``properties``."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class EventBase(BaseModel):
    """Fields every event carries; subclasses fix ``event_type`` and ``properties``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: UUID = Field(description="Unique id of this event; the idempotency key.")
    occurred_at: AwareDatetime = Field(
        description="Event time, RFC 3339 with an offset, when the member acted."
    )
    member_id: Identifier = Field(description="The member; also the Kafka key.")
    community_id: Identifier | None = Field(default=None, description="Community, if any.")
    channel: Channel
    schema_version: str = Field(default=SCHEMA_VERSION, pattern=r"^\d+\.\d+$")

    @field_validator("schema_version")
    @classmethod
    def _same_major(cls, value: str) -> str:
        if int(value.split(".", 1)[0]) != SCHEMA_MAJOR:
            raise ValueError(f"schema major version {SCHEMA_MAJOR} is supported, got {value}")
        return value

    @property
    def occurred_at_utc(self) -> datetime:
        """``occurred_at`` converted to UTC."""
        from datetime import UTC

        return self.occurred_at.astimezone(UTC)
