"""Pure parts of dedup, ingest batching and the sink's dedup token."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from pipeline.dedup import RecentIds
from pipeline.ingest import RawMessage, ingest_batch
from pipeline.sink import OffsetRanges, RetryPolicy, dedup_token
from pipeline.validate import ValidationConfig

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
CFG = ValidationConfig(hash_key=b"k", placeholders=frozenset({"null"}))


def raw(i: int, event_id: str, partition: int = 0) -> RawMessage:
    body = {
        "event_id": event_id,
        "occurred_at": "2026-11-26T11:00:00Z",
        "channel": "email",
        "event_type": "email_opened",
        "identifiers": {"email": f"p{i}@example.com"},
        "properties": {"campaign_id": "c1", "kind": "marketing"},
    }
    return RawMessage("raw", partition, i, orjson.dumps(body), 1_764_158_400_000)


def test_recent_ids_window_evicts_oldest() -> None:
    window = RecentIds(capacity=2)
    assert window.add("a") and window.add("b") and not window.add("a")
    assert window.add("c")  # evicts a
    assert window.add("a")


def test_ingest_batch_dedups_within_and_across_batches() -> None:
    window = RecentIds()
    first = ingest_batch([raw(0, "e1"), raw(1, "e2"), raw(2, "e1")], NOW, CFG, window)
    assert [tp.event_id for tp in first.valid[0]] == ["e1", "e2"] and first.duplicates == 1
    second = ingest_batch([raw(3, "e2", partition=1), raw(4, "e3", partition=1)], NOW, CFG, window)
    assert [tp.event_id for tp in second.valid[1]] == ["e3"] and second.duplicates == 1


def test_ingest_batch_dead_letters_bad_messages_with_coordinates() -> None:
    result = ingest_batch(
        [raw(0, "e1"), RawMessage("raw", 3, 9, b"oops"), RawMessage("raw", 3, 10, None)],
        NOW,
        CFG,
        RecentIds(),
    )
    assert [(d.reason, d.src.partition, d.src.offset) for d in result.dead] == [
        ("not_json", 3, 9),
        ("not_json", 3, 10),
    ]
    assert result.valid[0][0].src.timestamp == datetime(2025, 11, 26, 12, 0, tzinfo=UTC)


def test_stage_bug_dead_letters_with_stage_name(monkeypatch: object) -> None:
    import pipeline.ingest as ingest

    def boom(*_: object) -> None:
        raise RuntimeError("kaput")

    monkeypatch.setattr(ingest, "validate_message", boom)  # type: ignore[attr-defined]
    result = ingest_batch([raw(0, "e1")], NOW, CFG, RecentIds())
    assert result.dead[0].reason == "stage_error" and result.dead[0].stage == "validate"
    assert (
        "RuntimeError" in result.dead[0].errors[0].message
        and "kaput" in result.dead[0].errors[0].message
    )


def test_dedup_token_names_offsets_and_timestamps_deterministically() -> None:
    ranges = OffsetRanges()
    for partition, offset, ts in [(2, 7, 1.007), (0, 5, 1.0), (2, 3, 0.9), (0, 6, 1.5)]:
        ranges.add(partition, offset, ts)
    assert dedup_token("t", ranges) == "t|0:5-6@1000-1500,2:3-7@900-1007"


def test_same_offsets_from_a_broker_that_lost_its_data_get_another_token() -> None:
    """A broker restarted empty numbers new messages from 0 again: same offsets, other
    timestamps, so ClickHouse must not take the new insert for a replay of the old one."""
    before, after = OffsetRanges(), OffsetRanges()
    before.add(0, 0, 100.0)
    before.add(0, 9, 101.0)
    after.add(0, 0, 500.0)
    after.add(0, 9, 501.0)
    assert dedup_token("t", before) != dedup_token("t", after)
    replay = OffsetRanges()
    replay.add(0, 0, 100.0)
    replay.add(0, 9, 101.0)
    assert dedup_token("t", replay) == dedup_token("t", before)


def test_retry_backoff_grows_to_a_cap() -> None:
    delays = RetryPolicy(first_delay=1, max_delay=5, factor=2).delays()
    assert [next(delays) for _ in range(5)] == [1, 2, 4, 5, 5]


def test_undecodable_internal_message_becomes_a_dead_letter_of_its_stage() -> None:
    from types import SimpleNamespace

    from pipeline.handlers import decode_batch
    from schemas.records import TouchpointBatch

    def event(partition: int, offset: int, value: bytes) -> SimpleNamespace:
        message = SimpleNamespace(
            topic="tp.journeyed", partition=partition, offset=offset, timestamp=offset / 10
        )
        return SimpleNamespace(message=message, value=value)

    got = decode_batch(
        [event(1, 5, b'{"records": []}'), event(1, 6, b"garbage")],
        TouchpointBatch,
        "sink-touchpoints",
    )
    assert got.records == [TouchpointBatch(records=())]
    assert [(d.reason, d.stage, d.src.offset, d.original) for d in got.bad] == [
        ("stage_error", "sink-touchpoints", 6, b"garbage")
    ]
    assert got.token(SimpleNamespace(get_topic_name=lambda: "tp.journeyed")) == (
        "tp.journeyed|1:5-6@500-600"
    )
