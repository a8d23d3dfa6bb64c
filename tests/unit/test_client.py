"""The client's local checks and key choice (no broker needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.errors import InvalidEvent
from pipeline.producers.client import (
    check_event,
    encode_event,
    invalid_event,
    local_validation_config,
    message_key,
    raw_message_key,
)
from pipeline.producers.kafka import strongest_key
from schemas.events import IDENTIFIER_TYPES, WebEvent
from schemas.records import DeadLetter, Touchpoint

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "channel": "email",
        "event_type": "email_opened",
        "occurred_at": "2026-03-01T11:59:00Z",
        "identifiers": {"email": "Ann@Example.com", "anonymous_id": "a-1"},
    }
    return base | changes


def test_strongest_key_follows_the_identifier_order():
    ids = {kind: f"{kind}-value" for kind in IDENTIFIER_TYPES}
    for kind in IDENTIFIER_TYPES:
        assert strongest_key(ids) == f"{kind}-value".encode()
        del ids[kind]
    assert strongest_key(ids) is None
    assert IDENTIFIER_TYPES[0] == "crm_id" and IDENTIFIER_TYPES[-1] == "anonymous_id"


def test_strongest_key_skips_empty_and_non_string_values():
    assert strongest_key({"crm_id": "", "user_id": 7, "phone": "  ", "email": "é@x.io"}) == (
        "é@x.io".encode()
    )
    assert strongest_key({"other": "x"}) is None


def test_local_check_keeps_pii_in_clear():
    cfg = local_validation_config()
    assert cfg.hash_pii is False
    result = check_event(orjson.dumps(event()), cfg, now=NOW)
    assert isinstance(result, Touchpoint)
    assert result.identifiers["email"] == "ann@example.com"  # normalised, not hashed


def test_message_key_uses_the_raw_value_of_a_surviving_identifier():
    data = event(identifiers={"user_id": "undefined", "email": "Ann@Example.com"})
    result = check_event(orjson.dumps(data), local_validation_config(), now=NOW)
    assert isinstance(result, Touchpoint)
    assert message_key(data, result) == b"Ann@Example.com"  # placeholder user_id skipped
    assert message_key(data) == b"undefined"  # without the validated event: as given
    assert raw_message_key(orjson.dumps(data), result) == b"Ann@Example.com"
    assert raw_message_key(b"{broken") is None
    assert message_key([1, 2]) is None


def test_invalid_event_names_field_and_value():
    raw = orjson.dumps(event(identifiers={"phone": "call me"}))
    result = check_event(raw, local_validation_config(), now=NOW)
    assert isinstance(result, DeadLetter)
    error = invalid_event(result)
    assert isinstance(error, InvalidEvent)
    assert error.reason == "invalid_value"
    assert error.issues[0].path == "identifiers.phone"
    assert "identifiers.phone" in str(error) and "call me" in str(error)
    assert error.__notes__ == ["event_id='e-1'"]


def test_future_and_placeholder_only_events_are_invalid():
    cfg = local_validation_config(max_future=timedelta(minutes=5))
    future = check_event(orjson.dumps(event(occurred_at="2026-03-01T13:00:00Z")), cfg, now=NOW)
    assert isinstance(future, DeadLetter) and future.reason == "future_timestamp"
    placeholder = check_event(
        orjson.dumps(event(identifiers={"anonymous_id": "null"})), cfg, now=NOW
    )
    assert isinstance(placeholder, DeadLetter)
    assert placeholder.reason == "placeholder_identifier"


def test_encode_event_sends_the_event_as_given():
    data = event(properties={"subject": "Hi", "tags": ("a", "b")})
    assert orjson.loads(encode_event(data))["identifiers"]["email"] == "Ann@Example.com"
    assert orjson.loads(encode_event(data))["properties"]["tags"] == ["a", "b"]
    model = WebEvent.model_validate(
        {**event(channel="web", event_type="page_view"), "identifiers": {"user_id": "u"}}
    )
    decoded = orjson.loads(encode_event(model))
    assert decoded["identifiers"] == {"user_id": "u"}  # no null identifiers
    assert decoded["occurred_at"].endswith("Z")


def test_encode_event_refuses_what_json_cannot_hold():
    with pytest.raises(InvalidEvent, match="cannot encode as JSON"):
        encode_event(event(properties={"when": object()}))


def test_the_client_does_not_import_faust():
    code = (
        "import sys, pipeline.producers.client, pipeline.producers.kafka;"
        "print('faust' in sys.modules, 'aiokafka' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["False", "False"]
