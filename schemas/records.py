"""Internal records passed between stages and stored in ClickHouse (record version 1).

Stages exchange these frozen models, never raw dicts. Internal topics carry *batches*
(:class:`TouchpointBatch`): one Kafka message holds many records, so faust's per-message
cost is paid once per batch, not once per event.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Final, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from schemas.events import Channel

RECORD_VERSION: Final = 1

DeadLetterReason = Literal[
    "too_large",
    "invalid_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "placeholder_identifier",
    "future_timestamp",
    "unsupported_schema_version",
    "stage_error",
]


def _from_base64(value: Any) -> Any:
    return base64.b64decode(value, validate=True) if isinstance(value, str) else value


RawBytes = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), when_used="json"),
]
"""Bytes that travel as standard base64 (RFC 4648, with ``+/``) in JSON."""


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceRef(Record):
    """Where a record came from: the Kafka coordinates of the original message."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    timestamp: AwareDatetime | None = None
    """The Kafka message timestamp (produce time), when there is one."""


class Touchpoint(Record):
    """One valid, normalised event. Identity and journey fields are filled by later stages."""

    record_version: Literal[1] = RECORD_VERSION
    event_id: str
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    channel: Channel
    event_type: str
    known_type: bool
    identifiers: dict[str, str]
    """Normalised identifiers by type (email and phone as keyed hashes unless PII is clear)."""
    properties: dict[str, Any]
    extra: dict[str, Any] = Field(default_factory=dict)
    dropped_identifiers: tuple[str, ...] = ()
    schema_version: int
    source: str | None = None
    src: SourceRef
    customer_id: str = ""
    journey_id: str = ""
    stage: str = ""


class FieldError(Record):
    """One problem of a rejected event: the field path, what is wrong, the value (cut)."""

    path: str
    message: str
    value: str


class DeadLetter(Record):
    """A rejected message, kept with everything needed to understand and replay it."""

    record_version: Literal[1] = RECORD_VERSION
    reason: DeadLetterReason
    stage: str
    errors: tuple[FieldError, ...]
    original: RawBytes
    """The message as received (base64 in JSON)."""
    event_id: str = ""
    src: SourceRef
    failed_at: AwareDatetime


class TouchpointBatch(Record):
    """Many touchpoints in one internal-topic message. ``kind`` tells it apart from the
    other messages of the valid topic (:data:`schemas.journey.ValidMessage`); a message
    without ``kind`` is a touchpoint batch."""

    kind: Literal["touchpoints"] = "touchpoints"
    records: tuple[Touchpoint, ...]
    produced_at: datetime | None = None


_M = TypeVar("_M", bound=BaseModel)
_set = object.__setattr__
_FIELDS: dict[type[BaseModel], set[str]] = {}


def trusted(cls: type[_M], values: dict[str, Any]) -> _M:
    """Like ``model_construct`` (no validation) but without its per-field loop: ``values``
    must hold every field, already valid. The hot path builds its records with it.

    All instances of a class share one fields-set: the models are frozen, and pydantic
    copies the set before changing it (``model_copy``)."""
    model = cls.__new__(cls)
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = set(cls.model_fields)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", fields)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model
