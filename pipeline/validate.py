"""Stage 1, validate: raw message bytes in, a normalised :class:`Touchpoint` or a
:class:`DeadLetter` out. Pure: the clock and the config are arguments.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from pydantic import ValidationError

from pipeline.errors import truncate
from schemas.events import EventEnvelope, ParseContext
from schemas.properties import properties_model
from schemas.records import (
    RECORD_VERSION,
    DeadLetter,
    DeadLetterReason,
    FieldError,
    SourceRef,
    Touchpoint,
    trusted,
)

STAGE = "validate"
PII_TYPES = frozenset({"email", "phone"})
_WRONG_TYPE_SUFFIXES = ("_type", "_parsing")
_CHANNEL_MODELS = frozenset({"web", "chat", "email", "call_center"})


@dataclass(frozen=True)
class ValidationConfig:
    """What the validate stage needs, taken from settings at the entry point."""

    hash_key: bytes
    hash_pii: bool = True
    max_bytes: int = 1_000_000
    placeholders: frozenset[str] = frozenset()
    phone_region: str = "US"
    max_future: timedelta = timedelta(hours=24)


@lru_cache(maxsize=131_072)
def hash_identifier(kind: str, value: str, key: bytes) -> str:
    """Keyed hash of one identifier value (HMAC-SHA256, hex)."""
    return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def protect_identifiers(ids: dict[str, str], cfg: ValidationConfig) -> dict[str, str]:
    """Replace PII identifier values by their keyed hash, unless PII is kept in clear."""
    if not cfg.hash_pii:
        return ids
    return {k: hash_identifier(k, v, cfg.hash_key) if k in PII_TYPES else v for k, v in ids.items()}


def _reason_for(error_type: str, loc: tuple[Any, ...], message: str) -> DeadLetterReason:
    if error_type in ("missing", "union_tag_not_found"):
        return "missing_field"
    if error_type.endswith(_WRONG_TYPE_SUFFIXES) and not error_type.startswith("datetime"):
        return "wrong_type"
    if loc and loc[-1] == "schema_version" and error_type == "less_than_equal":
        return "unsupported_schema_version"
    if "in the future" in message:
        return "future_timestamp"
    if "real identifier" in message:
        return "placeholder_identifier"
    return "invalid_value"


def _too_new(err: Any) -> bool:
    loc = err["loc"]
    return bool(loc) and loc[-1] == "schema_version" and err["type"] == "less_than_equal"


def _deciding_error(exc: ValidationError) -> Any:
    """The error that names the reason: a too-new ``schema_version`` first (a v3 event's
    other fields follow a contract this validator does not know, so "missing occurred_at"
    would mislead its producer), else the first error."""
    errors = exc.errors(include_url=False)
    return next((e for e in errors if _too_new(e)), errors[0])


def _field_errors(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in (*prefix, *err["loc"]) if p not in ("event",))
        value = err.get("input")
        if err["type"].startswith("union_tag"):
            loc = ("channel",)
            value = value.get("channel") if isinstance(value, dict) else value
        elif loc and loc[0] in _CHANNEL_MODELS:
            loc = loc[1:]
        errors.append(
            FieldError(
                path=".".join(str(p) for p in loc) or "$",
                message=err["msg"],
                value=truncate(value),
            )
        )
    return errors


def dead_letter(
    reason: DeadLetterReason,
    errors: Iterable[FieldError],
    raw: bytes,
    src: SourceRef,
    now: datetime,
    *,
    stage: str = STAGE,
    event_id: str = "",
) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        stage=stage,
        errors=tuple(errors),
        original=raw,
        event_id=event_id,
        src=src,
        failed_at=now,
    )


def _decode(raw: bytes, cfg: ValidationConfig) -> tuple[Any, DeadLetterReason | None, str]:
    if len(raw) > cfg.max_bytes:
        return None, "too_large", f"message of {len(raw)} bytes exceeds {cfg.max_bytes}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, "invalid_utf8", f"invalid UTF-8 at byte {exc.start}"
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, "not_json", f"not JSON: {exc}"
    if not isinstance(data, dict):
        return None, "not_object", f"expected a JSON object, got {type(data).__name__}"
    return data, None, ""


def validate_message(
    raw: bytes, src: SourceRef, now: datetime, cfg: ValidationConfig
) -> Touchpoint | DeadLetter:
    """Validate and normalise one raw message."""
    data, reason, message = _decode(raw, cfg)
    if reason is not None:
        return dead_letter(
            reason, [FieldError(path="$", message=message, value=truncate(raw[:80]))], raw, src, now
        )
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else ""
    ctx = ParseContext(
        now=now,
        default_phone_region=cfg.phone_region,
        max_future=cfg.max_future,
        placeholders=cfg.placeholders,
    )
    try:
        event = EventEnvelope.model_validate({"event": data}, context=ctx).event
    except ValidationError as exc:
        first = _deciding_error(exc)
        why = _reason_for(first["type"], tuple(first["loc"]), first["msg"])
        return dead_letter(why, _field_errors(exc), raw, src, now, event_id=event_id)
    model = properties_model(event.channel, event.event_type)
    props: dict[str, Any] = event.properties
    if model is not None:
        try:
            props = model.model_validate(event.properties).model_dump(exclude_none=True)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            why = _reason_for(first["type"], ("properties",), first["msg"])
            errs = _field_errors(exc, prefix=("properties",))
            return dead_letter(why, errs, raw, src, now, event_id=event_id)
    values = {
        "record_version": RECORD_VERSION, "event_id": event.event_id,
        "occurred_at": event.occurred_at, "received_at": now, "channel": event.channel,
        "event_type": event.event_type, "known_type": model is not None,
        "identifiers": protect_identifiers(event.identifiers.as_dict(), cfg),
        "properties": props, "extra": dict(event.model_extra or {}),
        "dropped_identifiers": tuple(ctx.dropped), "schema_version": event.schema_version,
        "source": event.source, "src": src, "customer_id": "", "journey_id": "", "stage": "",
    }  # fmt: skip
    return trusted(Touchpoint, values)  # every value above is validated already
