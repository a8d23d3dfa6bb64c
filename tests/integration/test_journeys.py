"""The journey stage through the real pipeline: stage transitions and stamped touchpoints,
identity merges of journey states, and states rebuilt from the changelog after a restart."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.testing.stack import wait_for


def _ev(event_id: str, minute: int, event_type: str, **ids: str) -> dict[str, Any]:
    hour, minute = divmod(minute, 60)
    return {
        "event_id": event_id, "occurred_at": f"2026-11-26T{10 + hour:02d}:{minute:02d}:00Z",
        "channel": "web", "event_type": event_type, "identifiers": ids,
    }  # fmt: skip


class Feed:
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.producer = make_producer(KafkaConfig.from_settings(settings), client_id="journeys")
        self.client = connect(ClickHouseConfig.from_settings(settings))

    def send(self, *events: dict[str, Any]) -> None:
        for event in events:  # one key: one raw partition, so the order is kept
            self.producer.send(self.settings.raw_topic, key=b"k", value=orjson.dumps(event))
        self.producer.flush()

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return list(self.client.query(sql).result_rows)

    def wait_rows(self, sql: str, count: int, what: str, timeout: float = 60) -> list[Any]:
        return wait_for(lambda: (r := self.rows(sql)) and len(r) >= count and r, timeout, what)


TRANSITIONS = (
    "SELECT customer_id, journey_id, from_stage, to_stage, event_id FROM stage_transitions FINAL"
    " ORDER BY at"
)
STAMPS = (
    "SELECT event_id, customer_id, journey_id, stage FROM touchpoints FINAL ORDER BY occurred_at"
)


def test_one_customer_across_stages(pipeline_settings: Any, start_worker: Any) -> None:
    start_worker(pipeline_settings)
    feed = Feed(pipeline_settings)
    feed.send(
        _ev("s1", 0, "page_view", user_id="u-1"),
        _ev("s2", 5, "product_view", user_id="u-1"),
        _ev("s3", 9, "search", user_id="u-1"),
        _ev("s4", 10, "add_to_cart", user_id="u-1"),
        _ev("s5", 12, "purchase", user_id="u-1"),
    )
    stamps = feed.wait_rows(STAMPS, 5, "5 stamped touchpoints")
    transitions = feed.wait_rows(TRANSITIONS, 3, "3 stage transitions")
    (journey,) = {jid for _, _, jid, _ in stamps}
    assert journey
    assert [(e, s) for e, _, _, s in stamps] == [
        ("s1", "awareness"), ("s2", "consideration"), ("s3", ""), ("s4", "purchase"),
        ("s5", "purchase"),
    ]  # fmt: skip
    (customer,) = {c for _, c, _, _ in stamps}
    assert transitions == [
        (customer, journey, "", "awareness", "s1"),
        (customer, journey, "awareness", "consideration", "s2"),
        (customer, journey, "consideration", "purchase", "s4"),
    ]
    profile = feed.wait_rows(
        "SELECT customer_id, stage, purchases FROM customers FINAL", 1, "profile"
    )
    assert profile == [(customer, "purchase", 1)]
    journeys = feed.rows("SELECT journey_id, current_stage, stages FROM journeys FINAL")
    assert journeys == [(journey, "purchase", ["awareness", "consideration", "purchase"])]


def test_merge_of_a_cookie_journey_into_a_known_customer(
    pipeline_settings: Any, start_worker: Any
) -> None:
    start_worker(pipeline_settings)
    feed = Feed(pipeline_settings)
    feed.send(
        _ev("k1", 30, "page_view", anonymous_id="cookie-m"),
        _ev("k2", 35, "product_view", anonymous_id="cookie-m"),
        _ev("m1", 0, "ad_click", email="mia@example.com"),
    )
    before = feed.wait_rows(TRANSITIONS, 3, "both customers' transitions")
    assert len({row[0] for row in before}) == 2
    feed.send(_ev("m2", 40, "login", anonymous_id="cookie-m", email="mia@example.com"))

    def merged() -> list[Any] | None:
        rows = feed.rows(TRANSITIONS)
        return rows if len({r[0] for r in rows}) == 1 and len(rows) == 2 else None

    rows = wait_for(merged, 60, "one customer's transitions after the merge")
    current = feed.rows("SELECT DISTINCT current_customer_id FROM touchpoints_current")
    assert current == [(rows[0][0],)]
    assert [(r[2], r[3], r[4]) for r in rows] == [
        ("", "awareness", "m1"),  # the earliest entries of both journeys
        ("awareness", "consideration", "k2"),
    ]
    absorbed = {r[0] for r in before} - {rows[0][0]}
    retracted = feed.rows(
        f"SELECT count() FROM stage_transitions WHERE is_deleted = 1 AND customer_id IN {tuple(absorbed)!r}"
    )
    assert retracted[0][0] >= 1
    # the profile rows are written right after the transitions (another insert): wait for them
    def one_profile() -> list[Any] | None:
        found = feed.rows("SELECT customer_id FROM customers FINAL")
        return found if len(found) == 1 else None

    assert wait_for(one_profile, 30, "the absorbed profile retracted") == [(rows[0][0],)]


def test_restart_resumes_journeys_from_the_changelog(
    pipeline_settings: Any, start_worker: Any
) -> None:
    first = start_worker(pipeline_settings)
    feed = Feed(pipeline_settings)
    feed.send(_ev("r1", 0, "page_view", user_id="u-r"))
    (row,) = feed.wait_rows(TRANSITIONS, 1, "the first transition")
    first.stop()
    start_worker(pipeline_settings, index=1)
    feed.send(_ev("r2", 20, "product_view", user_id="u-r"))
    rows = feed.wait_rows(TRANSITIONS, 2, "the transition after the restart", timeout=90)
    assert rows[1] == (row[0], row[1], "awareness", "consideration", "r2")
    stamps = feed.wait_rows(STAMPS, 2, "both touchpoints")
    assert {jid for _, _, jid, _ in stamps} == {row[1]}
