"""Identity stitching through the real pipeline: links, late merges, guardrail refusals."""

from __future__ import annotations

import time
from typing import Any

import orjson

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.testing.stack import wait_for


def _ev(event_id: str, minute: int, **ids: str) -> dict[str, Any]:
    return {
        "event_id": event_id, "occurred_at": f"2026-11-26T10:{minute:02d}:00Z",
        "channel": "web", "event_type": "page_view", "identifiers": ids,
    }  # fmt: skip


PERSON_A = [
    _ev("a1", 0, anonymous_id="cookie-a"),
    _ev("a2", 1, anonymous_id="cookie-a", email="ada@example.com"),
    _ev("a3", 2, email="ada@example.com", crm_id="CRM-1"),
    _ev("a4", 3, phone="+14155550101"),
    _ev("a5", 4, phone="+14155550101", crm_id="CRM-1"),
]
PERSON_B = [
    _ev("b1", 5, email="bob@example.com", crm_id="CRM-2"),
    # Bob's event also carries Ada's email (a forwarded mail): CRM-2 may not join CRM-1
    _ev("b2", 6, email="ada@example.com", crm_id="CRM-2"),
]


def _clusters(client: Any) -> dict[str, str]:
    rows = client.query("SELECT event_id, current_customer_id FROM touchpoints_current").result_rows
    return dict(rows)


def test_one_person_across_identifiers_and_no_crm_merge(
    pipeline_settings: Any, start_worker: Any
) -> None:
    settings = pipeline_settings
    start_worker(settings)
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="identity-test")
    client = connect(ClickHouseConfig.from_settings(settings))
    first, *rest = PERSON_A + PERSON_B
    producer.send(settings.raw_topic, value=orjson.dumps(first))
    producer.flush()  # once it is visible, the ingest is consuming live
    wait_for(lambda: client.query("SELECT count() FROM touchpoints").result_rows[0][0], 60, "a1")
    for event in rest:
        producer.send(settings.raw_topic, value=orjson.dumps(event))
        producer.flush()
        time.sleep(0.4)  # one ingest batch each: across partitions Kafka keeps no order

    def settled() -> dict[str, str] | None:
        clusters = _clusters(client)
        if len(clusters) < 7:
            return None
        a = {clusters[e["event_id"]] for e in PERSON_A}
        b = {clusters[e["event_id"]] for e in PERSON_B}
        return clusters if len(a) == 1 and len(b) == 1 else None

    clusters = wait_for(settled, 90, "Ada's and Bob's events to settle into one customer each")
    assert clusters["a1"] != clusters["b1"]
    stamped = dict(client.query("SELECT event_id, customer_id FROM touchpoints FINAL").result_rows)
    assert stamped["a4"] != clusters["a4"]  # stamped before the phone was linked: re-attributed
    refusals_sql = "SELECT event_id, identifier_type, reason FROM identity_refusals"
    refusals = wait_for(lambda: client.query(refusals_sql).result_rows, 30, "a refusal")
    assert refusals == [("b2", "email", "unique_conflict")]
    overrides = client.query(
        "SELECT count() FROM identity_overrides FINAL WHERE is_deleted = 0"
    ).result_rows
    assert overrides[0][0] >= 1  # the phone-only and cookie customers were merged into Ada's
    # journeys follow identity: no live stage transition stays under a re-attributed id
    live_sql = "SELECT DISTINCT customer_id FROM stage_transitions FINAL WHERE is_deleted = 0"
    mapped_sql = "SELECT customer_id FROM identity_overrides FINAL WHERE is_deleted = 0"

    def stranded() -> set[str]:
        live = {r[0] for r in client.query(live_sql).result_rows}
        return live & {r[0] for r in client.query(mapped_sql).result_rows}

    wait_for(lambda: not stranded(), 60, "journeys of re-attributed ids merged into their customer")
    customers = {r[0] for r in client.query(live_sql).result_rows}
    assert customers == {clusters["a1"], clusters["b1"]}
