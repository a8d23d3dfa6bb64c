"""touchpoint's contract: the public event schema and the internal records (versioned)."""

from schemas.events import (
    CHANNELS,
    IDENTIFIER_TYPES,
    MAX_SCHEMA_VERSION,
    AnyEvent,
    EventEnvelope,
    Identifiers,
    ParseContext,
)
from schemas.properties import CATALOGUE, Properties, properties_model
from schemas.records import DeadLetter, FieldError, SourceRef, Touchpoint, TouchpointBatch

__all__ = [
    "CATALOGUE",
    "CHANNELS",
    "IDENTIFIER_TYPES",
    "MAX_SCHEMA_VERSION",
    "AnyEvent",
    "DeadLetter",
    "EventEnvelope",
    "FieldError",
    "Identifiers",
    "ParseContext",
    "Properties",
    "SourceRef",
    "Touchpoint",
    "TouchpointBatch",
    "properties_model",
]
