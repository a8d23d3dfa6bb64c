"""Events through the real broker, a real faust worker, and real ClickHouse (chDB)."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.testing.stack import wait_for


def _event(i: int, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"evt-{i}",
        "occurred_at": "2026-11-26T10:00:00+00:00",
        "channel": "web",
        "event_type": "page_view",
        "identifiers": {"anonymous_id": f"cookie-{i % 40}", "email": f"P{i % 40}@Example.com"},
        "properties": {"url": f"/p/{i}"},
    }
    body.update(over)
    return body


def _count(client: Any, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def test_events_flow_into_clickhouse_once_with_dead_letters(pipeline_settings: Any, start_worker: Any) -> None:
    settings = pipeline_settings
    start_worker(settings)
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="test")
    for i in range(600):
        producer.send(settings.raw_topic, key=f"cookie-{i % 40}".encode(), value=orjson.dumps(_event(i)))
    for i in range(100):  # duplicates of the first hundred
        producer.send(settings.raw_topic, key=f"cookie-{i % 40}".encode(), value=orjson.dumps(_event(i)))
    producer.send(settings.raw_topic, value=b"\xff\xfe not utf-8")
    producer.send(settings.raw_topic, value=orjson.dumps(_event(9999, channel="fax")))
    producer.flush()

    client = connect(ClickHouseConfig.from_settings(settings))
    wait_for(lambda: _count(client, "SELECT count() FROM dead_letters") == 2, 60, "2 dead letters")
    wait_for(lambda: _count(client, "SELECT count() FROM touchpoints") >= 600, 60, "600 rows")
    assert _count(client, "SELECT count() FROM touchpoints") == 600
    assert _count(client, "SELECT count() FROM touchpoints FINAL") == 600
    assert _count(client, "SELECT uniqExact(event_id) FROM touchpoints") == 600
    reasons = dict(client.query("SELECT reason, count() FROM dead_letters GROUP BY reason").result_rows)
    assert reasons == {"invalid_utf8": 1, "invalid_value": 1}
    paths = client.query("SELECT error_paths, error_values FROM dead_letters WHERE reason = 'invalid_value'").result_rows
    assert paths == [(["channel"], ["fax"])]
    # PII hashed: no clear email anywhere in the table
    assert _count(client, "SELECT count() FROM touchpoints WHERE position(email, '@') > 0") == 0
    assert _count(client, "SELECT countIf(produced_at IS NULL) FROM touchpoints") == 0
