"""The journey state cache: a dict to its users, compressed JSON for the idle customers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.journey import advance
from pipeline.journey_stage import PartitionState, run_batch
from pipeline.journey_states import StateCache, decode, encode
from pipeline.stage_model import load_stage_model
from pipeline.stamp import customer_partition
from schemas.journey import JourneyState
from schemas.records import SourceRef, Touchpoint, TouchpointBatch

MODEL = load_stage_model()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KINDS = ("page_view", "product_view", "pricing_view", "purchase", "login", "ad_click")


def ev(n: int, customer: str, minute: int, kind: str) -> Touchpoint:
    at = T0 + timedelta(minutes=minute)
    return Touchpoint(
        event_id=f"e{n}", occurred_at=at, received_at=at, channel="web", event_type=kind,
        known_type=True, identifiers={}, properties={"segment": "smb"}, schema_version=1,
        customer_id=customer, src=SourceRef(topic="raw", partition=0, offset=n),
    )  # fmt: skip


def state(customer: str, events: int = 3) -> JourneyState:
    step = advance(None, [ev(i, customer, i * 7, KINDS[i % 6]) for i in range(events)], MODEL)
    assert step.state is not None
    return step.state


def test_a_state_survives_encoding_unchanged() -> None:
    original = state("c1", events=6)
    blob = encode(original)
    assert decode(blob) == original
    assert len(blob) < len(original.model_dump_json())


def test_least_recently_used_states_are_encoded_and_come_back_equal() -> None:
    cache = StateCache(hot=2)
    a, b, c = state("a"), state("b"), state("c")
    cache["a"], cache["b"] = a, b
    assert cache.encoded == 0
    cache["c"] = c  # "a" is the least recently used
    assert cache.encoded == 1 and len(cache) == 3
    assert cache["b"] == b  # "b" becomes the most recent, so "c" is next to go
    assert cache["a"] == a  # decoded again; "c" encoded
    assert cache.encoded == 1 and "c" in cache and set(cache) == {"a", "b", "c"}
    assert cache.get("c") == c and cache.get("missing") is None


def test_delete_and_pop_reach_encoded_states() -> None:
    cache = StateCache(hot=1)
    cache["a"], cache["b"] = state("a"), state("b")
    assert cache.pop("a") == state("a")  # "a" was encoded
    del cache["b"]
    assert len(cache) == 0 and "a" not in cache
    with pytest.raises(KeyError):
        del cache["a"]


def test_hot_must_be_positive() -> None:
    with pytest.raises(ValueError, match="hot must be at least 1, got 0"):
        StateCache(hot=0)


def test_a_tiny_cache_gives_the_same_journeys_as_a_large_one() -> None:
    """Run one partition's batches with nearly every state encoded between batches, and
    with none: every output and every final state are equal."""
    rng = random.Random(5)
    customers = [c for c in (f"k{i}" for i in range(200)) if customer_partition(c, 2) == 0][:40]
    batches = [
        TouchpointBatch(records=tuple(
            ev(b * 100 + i, rng.choice(customers), b * 3 + i % 3, rng.choice(KINDS))
            for i in range(30)
        ))
        for b in range(20)
    ]  # fmt: skip
    cache = StateCache(hot=1)
    tiny, large = PartitionState(states=cache), PartitionState()
    for msg in batches:
        got, want = run_batch(tiny, 0, 2, [msg], MODEL), run_batch(large, 0, 2, [msg], MODEL)
        assert got.stamped == want.stamped and got.transitions == want.transitions
        assert got.changelog == want.changelog
    assert cache.encoded > 30
    assert dict(tiny.states) == dict(large.states)
