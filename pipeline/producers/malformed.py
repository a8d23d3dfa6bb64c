"""Malformed messages: one :data:`MalformedKind` each, with the dead-letter reason the
validate stage gives it (:data:`MALFORMED_REASONS`), and :func:`corrupt`, which breaks a
copy of an event body in that way.

The weights say how often each kind is picked among the malformed messages of a run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import orjson

from pipeline.producers.adversary import PLACEHOLDER_VALUES
from schemas.events import MAX_SCHEMA_VERSION
from schemas.records import DeadLetterReason

# --- malformed messages ----------------------------------------------------------------------
MalformedKind = Literal[
    "not_json", "invalid_utf8", "oversized", "missing_field", "wrong_type", "placeholder_only",
    "naive_timestamp", "unknown_channel", "not_object", "future_timestamp", "schema_too_new",
]  # fmt: skip
MALFORMED_REASONS: dict[MalformedKind, DeadLetterReason] = {
    "not_json": "not_json",
    "invalid_utf8": "invalid_utf8",
    "oversized": "too_large",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "placeholder_only": "placeholder_identifier",
    "naive_timestamp": "invalid_value",
    "unknown_channel": "invalid_value",
    "not_object": "not_object",
    "future_timestamp": "future_timestamp",
    "schema_too_new": "unsupported_schema_version",
}
"""Each kind and the :data:`~schemas.records.DeadLetterReason` ``validate_message`` gives it."""
MALFORMED_WEIGHTS: dict[MalformedKind, float] = {
    "not_json": 3, "invalid_utf8": 2, "oversized": 0.3, "missing_field": 3, "wrong_type": 3,
    "placeholder_only": 3, "naive_timestamp": 2, "unknown_channel": 2, "not_object": 1,
    "future_timestamp": 1, "schema_too_new": 1,
}  # fmt: skip
OVERSIZED_BYTES = 1_000_000 + 4096
"""Payload size of an ``oversized`` message: above the contract's 1 MB limit."""


def _cut(raw: bytes, rng: random.Random) -> bytes:
    return raw[: -rng.randint(1, min(40, len(raw) - 1))]


def _bad_byte(raw: bytes, rng: random.Random) -> bytes:
    cut = rng.randint(1, len(raw) - 1)
    return raw[:cut] + b"\xc3\x28" + raw[cut:]


def _drop_field(bad: dict[str, Any], rng: random.Random) -> None:
    del bad[rng.choice(("occurred_at", "event_type", "identifiers", "channel"))]


def _wrong_type(bad: dict[str, Any], rng: random.Random) -> None:
    key, value = rng.choice((("event_type", 42), ("properties", "n/a"), ("schema_version", "v1")))
    bad[key] = value


_FIELD_CHANGES: dict[str, Callable[[dict[str, Any], random.Random], Any]] = {
    "oversized": lambda b, _: b.update(
        properties={**b["properties"], "blob": "x" * OVERSIZED_BYTES}
    ),
    "missing_field": _drop_field,
    "wrong_type": _wrong_type,
    "placeholder_only": lambda b, r: b.update(
        identifiers={k: r.choice(PLACEHOLDER_VALUES) for k in b["identifiers"]}
    ),
    "naive_timestamp": lambda b, _: b.update(occurred_at=b["occurred_at"].replace(tzinfo=None)),
    "unknown_channel": lambda b, r: b.update(channel=r.choice(("sms", "push", "whatsapp", "Web"))),
    "future_timestamp": lambda b, _: b.update(occurred_at=b["occurred_at"] + timedelta(days=3650)),
    "schema_too_new": lambda b, _: b.update(schema_version=MAX_SCHEMA_VERSION + 1),
}
_BYTE_CHANGES: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "not_json": _cut,
    "invalid_utf8": _bad_byte,
    "not_object": lambda raw, _: b"[" + raw + b"]",
}


def corrupt(kind: MalformedKind, body: dict[str, Any], rng: random.Random) -> bytes:
    """The bytes of a broken copy of ``body`` (``occurred_at`` holds an aware datetime)."""
    bad = dict(body)
    if kind in _FIELD_CHANGES:
        _FIELD_CHANGES[kind](bad, rng)
    raw = orjson.dumps(bad, option=orjson.OPT_UTC_Z)
    return _BYTE_CHANGES[kind](raw, rng) if kind in _BYTE_CHANGES else raw
