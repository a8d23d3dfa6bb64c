"""The public event contract, schema v1: one JSON object per Kafka message.

The envelope is a discriminated union on ``channel``; ``properties`` are typed per event
type by :mod:`schemas.properties`. Models are frozen; datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.properties import Properties

CHANNELS = ("web", "chat", "email", "call_center")
Channel = Literal["web", "chat", "email", "call_center"]
IDENTIFIER_TYPES = ("crm_id", "user_id", "email", "phone", "chat_visitor_id", "anonymous_id")
"""Identifier types, strongest first: the producer key and the stitching priority."""
MAX_SCHEMA_VERSION = 2
"""v2 adds optional fields only; a newer version is refused as incompatible."""


@dataclass(frozen=True)
class ParseContext:
    """What validation needs besides the event: the clock, the region, the placeholders."""

    now: datetime
    default_phone_region: str = "US"
    max_future: timedelta = timedelta(hours=24)
    placeholders: frozenset[str] = frozenset()
    dropped: list[str] = field(default_factory=list)


def _context(info: ValidationInfo) -> ParseContext | None:
    ctx = info.context
    return ctx if isinstance(ctx, ParseContext) else None


@lru_cache(maxsize=65_536)
def normalise_email(value: str) -> str:
    email = value.strip().lower()
    local, sep, domain = email.partition("@")
    if not sep or not local or "." not in domain or " " in email:
        raise ValueError("not an email address")
    return email


@lru_cache(maxsize=65_536)
def normalise_phone(value: str, region: str) -> str:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


IdentifierValue = Annotated[str, Field(min_length=1, max_length=256)]


class Identifiers(BaseModel):
    """The ids of one person that an event carries; at least one is required."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    anonymous_id: IdentifierValue | None = None
    user_id: IdentifierValue | None = None
    email: IdentifierValue | None = None
    phone: IdentifierValue | None = None
    chat_visitor_id: IdentifierValue | None = None
    crm_id: IdentifierValue | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_placeholders(cls, data: Any, info: ValidationInfo) -> Any:
        ctx = _context(info)
        if not isinstance(data, dict) or ctx is None:
            return data
        kept: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, str) and value.strip().lower() in ctx.placeholders:
                ctx.dropped.append(f"identifiers.{key}={value!r}")
            elif value is None and key in IDENTIFIER_TYPES:
                ctx.dropped.append(f"identifiers.{key}=null")
            else:
                kept[key] = value
        return kept

    @field_validator("anonymous_id", "user_id", "chat_visitor_id", "crm_id")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        return value.strip() if value is not None else None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return normalise_email(value) if value is not None else None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        ctx = _context(info)
        region = ctx.default_phone_region if ctx else "US"
        return normalise_phone(value, region) if value is not None else None

    @model_validator(mode="after")
    def _at_least_one(self) -> Identifiers:
        if not self.as_dict():
            raise ValueError(
                "at least one real identifier is required (" + ", ".join(IDENTIFIER_TYPES) + ")"
            )
        return self

    def as_dict(self) -> dict[str, str]:
        """The present identifiers, strongest first."""
        return {k: v for k in IDENTIFIER_TYPES if (v := getattr(self, k)) is not None}


class EventBase(BaseModel):
    """Fields common to every channel. Unknown top-level keys are kept (schema v2 adds some)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    event_id: str = Field(min_length=1, max_length=128)
    occurred_at: AwareDatetime
    event_type: str = Field(min_length=1, max_length=64)
    identifiers: Identifiers
    properties: dict[str, Any] = Field(default_factory=dict)
    schema_version: int = Field(1, ge=1, le=MAX_SCHEMA_VERSION)
    source: str | None = Field(None, max_length=128)

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _rfc3339_only(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be an RFC 3339 string with a UTC offset")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _utc_not_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        value = value.astimezone(UTC)
        ctx = _context(info)
        if ctx is not None and value > ctx.now + ctx.max_future:
            raise ValueError(f"more than {ctx.max_future} in the future")
        return value


class WebEvent(EventBase):
    channel: Literal["web"]


class ChatEvent(EventBase):
    channel: Literal["chat"]


class EmailEvent(EventBase):
    channel: Literal["email"]


class CallCenterEvent(EventBase):
    channel: Literal["call_center"]


TouchpointEvent = Annotated[
    WebEvent | ChatEvent | EmailEvent | CallCenterEvent, Field(discriminator="channel")
]
AnyEvent = WebEvent | ChatEvent | EmailEvent | CallCenterEvent


class EventEnvelope(BaseModel):
    """Wrapper used to validate one incoming object against the union."""

    model_config = ConfigDict(frozen=True)

    event: TouchpointEvent


PropertiesModel = type[Properties]
