"""The foundation's acceptance run: 5,000 simulated events with 2% malformed, duplicates,
late and out-of-order ones, through the real broker, worker and ClickHouse."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import SimEvent, SimulationConfig, simulate
from pipeline.testing.stack import wait_for


def _produce(settings: Any, events: list[SimEvent]) -> None:
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="sim-test")
    for event in events:
        producer.send(settings.raw_topic, key=event.key, value=event.payload)
    producer.close()


def test_every_event_once_and_every_malformed_one_dead_lettered(pipeline_settings: Any, start_worker: Any) -> None:
    settings = pipeline_settings
    config = SimulationConfig(
        seed=7, start=datetime.now(UTC) - timedelta(hours=2), duration=timedelta(hours=2),
        customers=600, max_events=5000, malformed_fraction=0.02, duplicate_fraction=0.03,
    )  # fmt: skip
    events = list(simulate(config))
    valid_ids = {e.event_id for e in events if e.malformed is None}
    malformed = [e for e in events if e.malformed is not None]
    assert len(events) >= 5000 and len(malformed) >= 80 and sum(e.duplicate for e in events) > 100
    start_worker(settings)
    _produce(settings, events)

    client = connect(ClickHouseConfig.from_settings(settings))
    count = "SELECT count() FROM touchpoints"
    wait_for(lambda: client.query(count).result_rows[0][0] >= len(valid_ids), 120, "every valid event")
    wait_for(lambda: client.query("SELECT count() FROM dead_letters").result_rows[0][0] >= len(malformed), 60, "every dead letter")

    stored = [r[0] for r in client.query("SELECT event_id FROM touchpoints").result_rows]
    assert Counter(stored).most_common(1)[0][1] == 1  # no duplicates even without FINAL
    assert set(stored) == valid_ids
    final = client.query("SELECT count(), uniqExact(event_id) FROM touchpoints FINAL").result_rows[0]
    assert final == (len(valid_ids), len(valid_ids))

    expected = Counter(e.malformed for e in malformed)
    got = Counter(dict(client.query("SELECT reason, count() FROM dead_letters GROUP BY reason").result_rows))
    assert got == expected
    # each malformed message that carries an event_id is dead-lettered under it, with its reason
    with_ids = Counter((e.event_id, e.malformed) for e in malformed if e.event_id)
    rows = client.query("SELECT event_id, reason FROM dead_letters WHERE event_id != ''").result_rows
    assert Counter(rows) == with_ids
