"""The public event contract: acceptance, normalisation, hashing, and each rejection reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from pipeline.validate import ValidationConfig, hash_identifier, validate_message
from schemas.export import stale_files
from schemas.records import DeadLetter, SourceRef, Touchpoint

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SRC = SourceRef(topic="touchpoints.raw", partition=2, offset=41)
CFG = ValidationConfig(
    hash_key=b"test-key",
    placeholders=frozenset({"null", "undefined", "anonymous", "0", "-1", "", "[object object]"}),
)


def event(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "evt-1",
        "occurred_at": "2026-11-26T11:59:00+01:00",
        "channel": "web",
        "event_type": "purchase",
        "identifiers": {"email": "  Ada@Example.COM ", "anonymous_id": "cookie-1"},
        "properties": {"order_id": "o-1", "revenue": 99.5, "currency": "EUR", "coupon": "X"},
    }
    base.update(over)
    return base


def run(data: Any, cfg: ValidationConfig = CFG) -> Touchpoint | DeadLetter:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return validate_message(raw, SRC, NOW, cfg)


def accepted(data: Any, cfg: ValidationConfig = CFG) -> Touchpoint:
    out = run(data, cfg)
    assert isinstance(out, Touchpoint), out
    return out


def rejected(data: Any, cfg: ValidationConfig = CFG) -> DeadLetter:
    out = run(data, cfg)
    assert isinstance(out, DeadLetter), out
    return out


def test_valid_event_is_normalised_to_utc_and_typed() -> None:
    tp = accepted(event())
    assert tp.occurred_at == datetime(2026, 11, 26, 10, 59, tzinfo=UTC)
    assert tp.received_at == NOW
    assert tp.known_type and tp.channel == "web" and tp.event_type == "purchase"
    assert tp.properties == {"order_id": "o-1", "revenue": 99.5, "currency": "EUR", "coupon": "X"}
    assert tp.src == SRC and tp.schema_version == 1


@pytest.mark.parametrize(
    "data", [event(), event(channel="chat", event_type="unknown_kind", properties={"x": 1}),
             event(identifiers={"phone": "+1 415 555 0100", "crm_id": "null", "user_id": "u1"})],
)  # fmt: skip
def test_touchpoint_built_without_revalidation_equals_a_validated_one(data: Any) -> None:
    tp = accepted(data)  # built with schemas.records.trusted (no second validation pass)
    again = Touchpoint.model_validate_json(tp.model_dump_json())
    assert again == tp and again.model_dump() == tp.model_dump()
    assert tp.model_fields_set == set(Touchpoint.model_fields)


def test_email_is_trimmed_lowercased_then_hashed() -> None:
    tp = accepted(event())
    assert tp.identifiers["email"] == hash_identifier("email", "ada@example.com", b"test-key")
    assert "ada@example.com" not in orjson.dumps(tp.model_dump(mode="json")).decode()
    assert tp.identifiers["anonymous_id"] == "cookie-1"


def test_phone_is_normalised_to_e164_before_hashing() -> None:
    a = accepted(event(identifiers={"phone": "(415) 555-2671"}))
    b = accepted(event(identifiers={"phone": "+1 415 555 2671"}))
    assert a.identifiers["phone"] == b.identifiers["phone"]
    assert a.identifiers["phone"] == hash_identifier("phone", "+14155552671", b"test-key")


def test_clear_pii_mode_keeps_normalised_values() -> None:
    cfg = ValidationConfig(hash_key=b"k", hash_pii=False, placeholders=CFG.placeholders)
    tp = accepted(event(identifiers={"email": " X@Y.org", "phone": "+44 20 7946 0958"}), cfg)
    assert tp.identifiers == {"email": "x@y.org", "phone": "+442079460958"}


def test_unknown_type_on_known_channel_is_accepted_untyped() -> None:
    tp = accepted(event(event_type="wishlist_added", properties={"sku": 1}))
    assert not tp.known_type and tp.properties == {"sku": 1}


def test_placeholder_identifier_is_dropped_when_others_remain() -> None:
    tp = accepted(
        event(identifiers={"email": "a@b.co", "anonymous_id": "undefined", "user_id": "0"})
    )
    assert set(tp.identifiers) == {"email"}
    assert tp.dropped_identifiers == (
        "identifiers.anonymous_id='undefined'",
        "identifiers.user_id='0'",
    )


def test_v2_event_with_added_optional_field_is_kept() -> None:
    tp = accepted(event(schema_version=2, consent="granted"))
    assert tp.schema_version == 2 and tp.extra == {"consent": "granted"}


@pytest.mark.parametrize(
    ("data", "reason", "path"),
    [
        (b"\xff\xfe{}", "invalid_utf8", "$"),
        (b"{not json", "not_json", "$"),
        (b"[1, 2]", "not_object", "$"),
        (b"x" * 1_000_001, "too_large", "$"),
        ({k: v for k, v in event().items() if k != "event_id"}, "missing_field", "event_id"),
        ({k: v for k, v in event().items() if k != "occurred_at"}, "missing_field", "occurred_at"),
        ({k: v for k, v in event().items() if k != "channel"}, "missing_field", "channel"),
        ({k: v for k, v in event().items() if k != "event_type"}, "missing_field", "event_type"),
        ({k: v for k, v in event().items() if k != "identifiers"}, "missing_field", "identifiers"),
        (event(event_id=17), "wrong_type", "event_id"),
        (event(event_id=""), "invalid_value", "event_id"),
        (event(event_id="x" * 129), "invalid_value", "event_id"),
        (event(occurred_at=1764158400), "invalid_value", "occurred_at"),
        (event(occurred_at="yesterday"), "invalid_value", "occurred_at"),
        (event(occurred_at="2026-11-26T11:00:00"), "invalid_value", "occurred_at"),
        (event(occurred_at="2026-11-28T12:00:01Z"), "future_timestamp", "occurred_at"),
        (event(channel="fax"), "invalid_value", "channel"),
        (event(channel=3), "invalid_value", "channel"),
        (event(identifiers={}), "placeholder_identifier", "identifiers"),
        (
            event(identifiers={"email": "null", "anonymous_id": "[object Object]"}),
            "placeholder_identifier",
            "identifiers",
        ),
        (event(identifiers="ada@example.com"), "wrong_type", "identifiers"),
        (event(identifiers={"email": "not-an-email"}), "invalid_value", "identifiers.email"),
        (event(identifiers={"phone": "12"}), "invalid_value", "identifiers.phone"),
        (event(identifiers={"fax": "123"}), "invalid_value", "identifiers.fax"),
        (event(properties=[1]), "wrong_type", "properties"),
        (event(properties={"revenue": "lots"}), "wrong_type", "properties.revenue"),
        (
            event(event_type="review_submitted", properties={"rating": 6}),
            "invalid_value",
            "properties.rating",
        ),
        (event(schema_version="one"), "wrong_type", "schema_version"),
        (event(schema_version=3), "unsupported_schema_version", "schema_version"),
        (  # an incompatible change: the version decides, not the field it renamed
            {k: v for k, v in event(schema_version=3, ts="x").items() if k != "occurred_at"},
            "unsupported_schema_version",
            "schema_version",
        ),
    ],
)
def test_each_rejection_names_reason_field_and_value(data: Any, reason: str, path: str) -> None:
    dl = rejected(data)
    assert dl.reason == reason
    assert path in [e.path for e in dl.errors], dl.errors
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    assert dl.original == raw and dl.src == SRC and dl.stage == "validate"
    assert all(len(e.value) <= 200 for e in dl.errors)


def test_rejection_value_shows_the_offending_value() -> None:
    dl = rejected(event(channel="fax"))
    assert dl.errors[0].value == "fax"
    dl = rejected(event(identifiers={"email": "not-an-email"}))
    assert dl.errors[0].value == "not-an-email"


def test_configured_placeholder_is_rejected() -> None:
    cfg = ValidationConfig(hash_key=b"k", placeholders=CFG.placeholders | {"test@test.com"})
    dl = rejected(event(identifiers={"email": "TEST@test.com"}), cfg)
    assert dl.reason == "placeholder_identifier"


def test_future_limit_is_24_hours() -> None:
    ok = (NOW + timedelta(hours=23, minutes=59)).isoformat()
    assert isinstance(run(event(occurred_at=ok)), Touchpoint)


def test_dead_letter_json_round_trips_original_bytes_as_base64() -> None:
    dl = rejected(b"\xff\x00\xfe")
    text = dl.model_dump_json()
    assert '"original":"/wD+"' in text
    assert DeadLetter.model_validate_json(text).original == b"\xff\x00\xfe"


def test_json_schema_files_are_fresh() -> None:
    assert stale_files() == [], "run: python -m schemas.export"


def test_configuration_doc_is_fresh() -> None:
    from pipeline.settings_doc import DOC, render

    assert DOC.read_text() == render(), "run: python -m pipeline.settings_doc"
