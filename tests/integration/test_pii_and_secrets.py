"""With PII hashing on, a simulated run (malformed events included) leaves no clear email or
phone number in any ClickHouse table, in the dead-letter topic or in the worker's log, and
the log never shows a secret."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import SimEvent, SimulationConfig, simulate
from pipeline.testing import read_topic
from pipeline.testing.stack import wait_for
from schemas.records import DeadLetter

HASH_KEY = "hash-key-7Qz1-never-logged"
WEBHOOK_TOKEN = "hook-token-Xk42-never-logged"
EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def _clear_values(events: list[SimEvent]) -> set[str]:
    """Every email and phone number the producers sent, as sent and normalised."""
    found: set[str] = set()
    for event in events:
        if len(event.payload) > 100_000:
            continue  # the oversized junk message (its regex scan would be quadratic)
        found.update(m.decode().lower() for m in EMAIL.findall(event.payload))
        try:
            data = orjson.loads(event.payload)
        except orjson.JSONDecodeError:
            continue
        ids = data.get("identifiers") if isinstance(data, dict) else None
        phone = ids.get("phone") if isinstance(ids, dict) else None
        if isinstance(phone, str) and sum(c.isdigit() for c in phone) >= 7:
            found.add(phone.lower())
            found.add("+" + "".join(c for c in phone if c.isdigit()))  # E.164 for +1 numbers
            found.add("+1" + "".join(c for c in phone if c.isdigit()))
    return {v for v in found if len(v) >= 6}


def _leaks(text: str, values: set[str]) -> list[str]:
    low = text.lower()
    return sorted(v for v in values if v in low)


def _tables_text(client: Any, database: str) -> dict[str, str]:
    tables = client.query(
        "SELECT name FROM system.tables WHERE database = %(db)s AND engine NOT LIKE '%%View%%'",
        parameters={"db": database},
    ).result_rows
    return {
        name: client.raw_query(f"SELECT * FROM `{name}` FORMAT TabSeparated").decode(
            errors="replace"
        )
        for (name,) in tables
    }


def test_no_clear_pii_anywhere_and_no_secret_in_the_log(
    pipeline_settings: Any, start_worker: Any
) -> None:
    settings = pipeline_settings.model_copy(update={})
    config = SimulationConfig(
        seed=31, start=datetime.now(UTC) - timedelta(hours=2), duration=timedelta(hours=2),
        customers=400, max_events=4000, malformed_fraction=0.03,
    )  # fmt: skip
    events = list(simulate(config))
    values = _clear_values(events)
    assert len(values) > 100  # the run does carry PII
    worker = start_worker(
        settings, pii_hash_key=HASH_KEY, pii_mode="hash", alert_webhook_token=WEBHOOK_TOKEN,
        alert_webhook_url="http://127.0.0.1:9/hook", alert_min_volume=1, alert_zscore=0.5,
    )  # fmt: skip
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="pii-test")
    for event in events:
        producer.send(settings.raw_topic, key=event.key, value=event.payload)
    producer.close()
    valid = {e.event_id for e in events if e.malformed is None}
    malformed = sum(e.malformed is not None for e in events)
    client = connect(ClickHouseConfig.from_settings(settings))

    def drained() -> bool:
        stored = client.query("SELECT uniqExact(event_id) FROM touchpoints").result_rows[0][0]
        dead = client.query("SELECT count() FROM dead_letters").result_rows[0][0]
        return stored >= len(valid) and dead >= malformed

    wait_for(drained, 120, "every event stored or dead-lettered")
    raw = read_topic(settings.kafka_bootstrap, settings.raw_topic, timeout=10)
    sent = "\n".join(m.value.decode(errors="replace") for m in raw if len(m.value) < 100_000)
    assert len(_leaks(sent, values)) > 100  # the scan finds clear values where they are

    for table, text in _tables_text(client, settings.clickhouse_database).items():
        assert not _leaks(text, values), f"clear PII in {table}: {_leaks(text, values)[:5]}"
    dead = [
        DeadLetter.model_validate_json(m.value)
        for m in read_topic(settings.kafka_bootstrap, settings.dlq_topic, timeout=10)
    ]
    assert len(dead) >= malformed
    for dl in dead:
        text = dl.original.decode(errors="replace") + dl.model_dump_json()
        assert not _leaks(text, values), f"clear PII in dead letter {dl.src}: {_leaks(text, values)}"

    worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert "Worker ready" in log
    assert not _leaks(log, values), f"clear PII in the worker log: {_leaks(log, values)[:5]}"
    for secret in (HASH_KEY, WEBHOOK_TOKEN):
        assert secret not in log
