"""Dead letters keep no clear PII when hashing is on (pipeline.redact)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from pipeline.dedup import RecentIds
from pipeline.identity_ops_dead_letters import names_person
from pipeline.ingest import RawMessage, ingest_batch
from pipeline.redact import pseudonym, redact_payload
from pipeline.validate import ValidationConfig, hash_identifier

CFG = ValidationConfig(hash_key=b"k")
NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def _raw(value: bytes, offset: int = 0) -> RawMessage:
    return RawMessage(topic="raw", partition=0, offset=offset, value=value)


def test_identifier_fields_become_the_validate_stages_pseudonym() -> None:
    ids = {"email": " Ada@Example.com", "phone": "+1 (415) 555-0101"}
    payload = orjson.dumps({"identifiers": ids})
    out = orjson.loads(redact_payload(payload, CFG))
    assert out["identifiers"]["email"] == "email:" + hash_identifier("email", "ada@example.com", b"k")
    assert out["identifiers"]["phone"] == pseudonym("phone", "+14155550101", CFG)


def test_free_text_and_broken_payloads_lose_emails_and_phones_only() -> None:
    text = b'{"note": "write to bob@example.com or call +44 20 7946 0958", "at": "2026-11-26"'
    out = redact_payload(text + b"\xff", CFG)
    assert b"bob@example.com" not in out and b"7946" not in out
    assert b"2026-11-26" in out and out.endswith(b"\xff")  # dates and other bytes kept
    assert pseudonym("email", "bob@example.com", CFG).encode() in out


def test_ingest_dead_letters_are_redacted_and_forget_still_finds_them() -> None:
    bad = {"event_id": "d1", "occurred_at": "2026-11-26T10:00:00Z", "channel": "fax",
           "event_type": "page_view", "identifiers": {"email": "ada@example.com"}}  # fmt: skip
    bad_email = {**bad, "channel": "web", "identifiers": {"email": "ada@@example"}}
    result = ingest_batch(
        [_raw(orjson.dumps(bad)), _raw(orjson.dumps(bad_email), 1), _raw(b"ada@example.com", 2)],
        NOW, CFG, RecentIds(100),
    )  # fmt: skip
    assert len(result.dead) == 3
    for dl in result.dead:
        dumped = dl.model_dump_json()
        assert "ada@example.com" not in dumped and "ada@@example" not in dumped
        assert "ada@example.com" not in dl.original.decode(errors="replace")
    node = pseudonym("email", "ada@example.com", CFG)
    found = [names_person(dl.original.decode(), [e.value for e in dl.errors], frozenset({node}),
                          "", lambda k, v: None) for dl in result.dead]  # fmt: skip
    assert found == [True, False, True]  # the invalid address is another value


def test_hashing_off_keeps_the_payload() -> None:
    clear = ValidationConfig(hash_key=b"k", hash_pii=False)
    result = ingest_batch([_raw(b"ada@example.com")], NOW, clear, RecentIds(10))
    assert result.dead[0].original == b"ada@example.com"
