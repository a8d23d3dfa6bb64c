"""A checkout incident through the real broker, worker and ClickHouse: the drop-off spike
alert fires and resolves, and reaches the ``alerts`` table, the ``<prefix>.alerts`` topic,
the webhook (Alertmanager JSON) and the gauges."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import Conversion, Incident, SimulationConfig, simulate
from pipeline.testing import read_topic
from pipeline.testing.stack import wait_for


class Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802  # the http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


SPEED = 60.0
"""Simulated seconds per wall second: a worker's few seconds of latency under load are a few
simulated minutes, inside the completeness grace (at 120 x a loaded machine's delays
reached past it and the windows were judged before their conversions were in)."""


def paced(settings: Any, config: SimulationConfig) -> None:
    """Produce the run in delivery order, ``SPEED`` times faster than simulated time."""
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="incident")
    began = time.monotonic()
    for event in simulate(config):
        due = (event.delivered_at - config.start).total_seconds() / SPEED
        if (ahead := began + due - time.monotonic()) > 0.05:
            producer.flush()
            time.sleep(ahead)
        producer.send(settings.raw_topic, key=event.key, value=event.payload)
    producer.close()


@pytest.mark.timeout(540)  # 190 s of paced producing, then the alert's round trip
def test_an_incident_fires_and_resolves_everywhere(pipeline_settings: Any, start_worker: Any) -> None:
    settings = pipeline_settings
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    # time-compressed (SPEED x): a simulated minute takes a second, so the identity
    # resolver's second of delay is a simulated minute; the grace covers it (25 s of wall
    # time: 10 s was too short once, with three xdist processes on two CPUs, and a window
    # judged before its conversions were in fired 5 minutes before the onset)
    start_worker(
        settings, alert_min_volume=15, alert_zscore=3.0, alert_confirm=2, alert_relative_increase=0.3,
        alert_webhook_url=hook,
        alert_max_ingest_lag=3600,
        metrics_completeness_grace=1500,
    )  # fmt: skip
    # the run goes on 80 minutes past the incident: the alert resolves once the customers who
    # entered during it are older than the detector's lags (up to 30 windows)
    start = datetime.now(UTC) - timedelta(hours=3, minutes=30)
    config = SimulationConfig(
        seed=5, start=start, duration=timedelta(hours=3, minutes=10), customers=4000,
        conversion=Conversion(awareness=0.9, consideration=0.8, purchase=0.9),
        incidents=(Incident(stage="purchase", start_minute=80, end_minute=110, dropoff_multiplier=7),),
        late_fraction=0, malformed_fraction=0, duplicate_fraction=0,
    )  # fmt: skip
    paced(settings, config)

    client = connect(ClickHouseConfig.from_settings(settings))
    sql = "SELECT state, stage, channel, window_start, volume FROM alerts ORDER BY window_start"

    def fired_and_resolved() -> list[Any] | None:
        rows = client.query(sql).result_rows
        states = {r[0] for r in rows if r[1] == "purchase" and r[2] == "all"}
        return rows if states == {"firing", "resolved"} else None

    try:
        rows = wait_for(fired_and_resolved, 150, "a purchase alert fired and resolved", interval=2.0)
    except AssertionError:
        windows = client.query(
            "SELECT window_start, entries, conversions, dropoffs, is_complete FROM stage_metrics "
            "FINAL WHERE stage = 'purchase' AND channel = 'all' AND segment = 'all' ORDER BY 1"
        ).result_rows
        url = f"http://127.0.0.1:{settings.worker_web_port}/stages"
        with urllib.request.urlopen(url, timeout=5) as response:
            feed = json.loads(response.read())
        raise AssertionError(f"no alert; windows {windows}; statuses {feed['statuses']}") from None
    onset = start + timedelta(minutes=80)
    fired = min(r[3] for r in rows if r[0] == "firing" and r[2] == "all").replace(tzinfo=UTC)
    # matched as `eval alerts` matches: from the onset to the end of the incident plus the
    # purchase timeout (when its own drop-offs are decided) plus the span
    assert onset <= fired <= start + timedelta(minutes=110 + 30 + 5), (onset, rows)
    resolved = max(r[3] for r in rows if r[0] == "resolved" and r[2] == "all").replace(tzinfo=UTC)
    assert resolved >= start + timedelta(minutes=110)

    messages = read_topic(settings.kafka_bootstrap, settings.topic("alerts"), timeout=10)
    assert {json.loads(m.value)["state"] for m in messages} >= {"firing", "resolved"}
    def purchase_calls() -> list[dict[str, Any]] | None:
        calls = [p for p in Hook.received if p["alerts"][0]["labels"]["stage"] == "purchase"]
        return calls if {p["status"] for p in calls} >= {"firing", "resolved"} else None

    # the sensitive test thresholds may also fire for other stages: follow purchase's calls
    calls = wait_for(purchase_calls, 30, "the webhook calls for purchase")
    assert calls[0]["status"] == "firing" and calls[0]["version"] == "4"
    url = f"http://127.0.0.1:{settings.worker_web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        metrics = response.read().decode()
    assert 'touchpoint_dropoff_alert_firing{channel="all",stage="purchase"}' in metrics
    server.shutdown()
