"""Stage metrics through the real broker, worker and ClickHouse: a simulated run with late
and out-of-order events, duplicates and identity merges; the final windows equal their
recomputation from ``stage_transitions`` (``touchpoint verify metrics``), the live feed and
the gauges agree with ClickHouse."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from typer.testing import CliRunner

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.cli import cli
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.settings import settings_env
from pipeline.stage_model import load_stage_model
from pipeline.testing.stack import wait_for
from pipeline.verify_metrics import verify


def _run(settings: Any) -> list[Any]:
    config = SimulationConfig(
        seed=21, start=datetime.now(UTC) - timedelta(hours=3), duration=timedelta(hours=3),
        customers=500, max_events=6000, late_fraction=0.03, out_of_order_fraction=0.1,
        adversarial=True,
    )  # fmt: skip
    events = list(simulate(config))
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="metrics-test")
    for event in events:
        producer.send(settings.raw_topic, key=event.key, value=event.payload)
    producer.close()
    return events


_SIZES = (
    "SELECT (SELECT count() FROM stage_transitions), (SELECT count() FROM customers), "
    "(SELECT count() FROM stage_metrics), (SELECT count() FROM late_events)"
)


def quiet(client: Any, checks: int = 4, timeout: float = 180) -> None:
    """Wait until every table the metrics depend on stops changing (the pipeline is idle)."""
    seen: list[Any] = []

    def still() -> bool:
        seen.append(client.query(_SIZES).result_rows[0])
        return len(seen) >= checks and len(set(seen[-checks:])) == 1

    wait_for(still, timeout, "the pipeline to go quiet", interval=2.0)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read()
    return json.loads(body) if url.endswith("/stages") else body.decode()


def test_final_windows_equal_their_recomputation(pipeline_settings: Any, start_worker: Any) -> None:
    settings = pipeline_settings
    start_worker(settings)
    events = _run(settings)
    valid = {e.event_id for e in events if e.malformed is None}
    newest = max(e.occurred_at for e in events)
    client = connect(ClickHouseConfig.from_settings(settings))
    count = "SELECT count() FROM touchpoints"
    wait_for(lambda: client.query(count).result_rows[0][0] >= len(valid), 180, "every event")
    model = load_stage_model()
    start, end = newest - timedelta(hours=4), newest

    quiet(client)
    report = verify(client, model, start, end)
    assert report.ok, report.mismatches[:20]
    assert report.windows and report.totals["dropoffs"]
    assert report.final_until is not None and report.final_until >= newest - timedelta(minutes=32)
    assert report.totals["entries"] > 500 and report.totals["conversions"] > 100
    # a range that starts and ends inside windows compares whole windows only
    oldest = min(e.occurred_at for e in events if e.malformed is None)
    mid = verify(client, model, oldest + timedelta(seconds=1), end - timedelta(seconds=1))
    assert mid.ok and mid.windows, mid.mismatches[:20]

    # the command gives the same verdict, with the settings from the environment
    result = CliRunner().invoke(
        cli, ["verify", "metrics", "--from", start.isoformat(), "--to", end.isoformat()],
        env=settings_env(settings),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "OK" in result.output

    # roll-ups equal the sums of their parts; provisional windows carry their completeness
    rows = client.query(
        "SELECT stage, sum(entries) FROM stage_metrics FINAL WHERE channel = 'all' "
        "AND segment = 'all' GROUP BY stage ORDER BY stage"
    ).result_rows
    parts = client.query(
        "SELECT stage, sum(entries) FROM stage_metrics FINAL WHERE channel != 'all' "
        "AND segment != 'all' GROUP BY stage ORDER BY stage"
    ).result_rows
    assert rows == parts
    kinds = client.query(
        "SELECT is_final, is_complete, max(events) > 0 FROM stage_metrics FINAL GROUP BY 1, 2"
    ).result_rows
    assert (0, 0, 1) in kinds or (0, 1, 1) in kinds  # the newest windows are provisional
    assert (1, 1, 1) in kinds

    # the live feed and the gauges come from the same state
    base = f"http://127.0.0.1:{settings.worker_web_port}"
    feed = _get(base + "/stages")
    assert feed["owner"] and feed["windows"]
    metrics = _get(base + "/metrics")
    assert "touchpoint_stage_entries{" in metrics
    assert "touchpoint_metrics_newest_final_window_seconds" in metrics
