"""identity squash through the real pipeline: after a run with merges, every stored row
carries the customer the overrides gave it, a second run changes nothing, and squashing
while workers write leaves every row at its current customer."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from typer.testing import CliRunner

import pipeline.cli_identity  # noqa: F401  # registers identity squash on the cli
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.cli import cli
from pipeline.identity_ops import squash
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import SimEvent, SimulationConfig, simulate
from pipeline.settings import settings_env
from pipeline.testing.stack import wait_for

CURRENT = "SELECT event_id, current_customer_id FROM touchpoints_current"
STAMPED = "SELECT event_id, customer_id FROM touchpoints FINAL"
# rows stamped with an id whose override squash cleared: the view no longer maps them
STRANDED = """
SELECT count() FROM touchpoints FINAL WHERE customer_id IN (
    SELECT customer_id FROM identity_overrides GROUP BY customer_id
    HAVING argMax(is_deleted, version) = 1 AND argMax(current_customer_id, version) != '')
"""
GRACE = 5.0
"""Well above the pipeline's latency here: in-flight rows land before their override goes."""


def _events(seed: int, customers: int, count: int) -> list[SimEvent]:
    config = SimulationConfig(
        seed=seed, start=datetime.now(UTC) - timedelta(hours=2), duration=timedelta(hours=2),
        customers=customers, max_events=count, malformed_fraction=0.0, adversarial=True,
    )  # fmt: skip
    return list(simulate(config))


def _produce(settings: Any, events: list[SimEvent]) -> None:
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="squash-test")
    for event in events:
        producer.send(settings.raw_topic, key=event.key, value=event.payload)
    producer.close()


def _settle(client: Any, at_least: int) -> dict[str, str]:
    """touchpoints_current once it has ``at_least`` events and stopped changing for 3 s."""
    last: list[Any] = [None]

    def stable() -> dict[str, str] | None:
        snapshot = (
            dict(client.query(CURRENT).result_rows),
            client.query("SELECT count() FROM identity_overrides").result_rows[0][0],
        )
        same = snapshot == last[0] and len(snapshot[0]) >= at_least
        last[0] = snapshot
        return snapshot[0] if same else None

    return wait_for(stable, 180, f"{at_least} events to settle", interval=3.0)


def _squash_cli(settings: Any) -> str:
    result = CliRunner().invoke(
        cli, ["identity", "squash", "--grace", "0"], env=settings_env(settings)
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_squash_moves_rows_to_their_current_customer(
    pipeline_settings: Any, start_worker: Any
) -> None:
    settings = pipeline_settings
    events = _events(seed=11, customers=120, count=1500)
    valid = {e.event_id for e in events if e.malformed is None}
    start_worker(settings)
    _produce(settings, events)
    client = connect(ClickHouseConfig.from_settings(settings))
    before = _settle(client, int(len(valid) * 0.9))
    stamped = dict(client.query(STAMPED).result_rows)
    moved = sum(stamped[e] != c for e, c in before.items())
    assert moved > 0, "the run should have merged some customers"

    first = _squash_cli(settings)
    assert f"touchpoints={moved}" in first, first
    found = re.search(r"overrides cleared: (\d+)", first)
    assert found is not None and int(found.group(1)) > 0, first
    assert dict(client.query(STAMPED).result_rows) == before
    assert dict(client.query(CURRENT).result_rows) == before

    second = _squash_cli(settings)
    assert "touchpoints=0" in second and "overrides cleared: 0" in second, second
    assert dict(client.query(STAMPED).result_rows) == before


def test_squash_while_workers_write(pipeline_settings: Any, start_worker: Any) -> None:
    settings = pipeline_settings
    events = _events(seed=23, customers=150, count=2000)
    valid = {e.event_id for e in events if e.malformed is None}
    start_worker(settings)
    client = connect(ClickHouseConfig.from_settings(settings))
    _produce(settings, events[: len(events) // 2])
    _settle(client, int(len(valid) * 0.4))

    done = threading.Event()
    runs: list[Any] = []

    def squash_repeatedly() -> None:
        own = connect(ClickHouseConfig.from_settings(settings))
        while not done.is_set():
            runs.append(squash(own, settings.clickhouse_database, grace_seconds=GRACE))
            time.sleep(0.2)

    thread = threading.Thread(target=squash_repeatedly)
    thread.start()
    try:
        _produce(settings, events[len(events) // 2 :])
        before = _settle(client, int(len(valid) * 0.9))
    finally:
        done.set()
        thread.join()
    assert len(runs) > 1 and sum(r.overrides_cleared for r in runs) > 0
    assert sum(r.rows_rewritten["touchpoints"] for r in runs) > 0
    assert client.query(STRANDED).result_rows[0][0] == 0
    squash(client, settings.clickhouse_database, grace_seconds=0)
    assert dict(client.query(CURRENT).result_rows) == before  # squash changes no mapping
    assert dict(client.query(STAMPED).result_rows) == before
