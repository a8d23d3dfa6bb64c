"""The worker's HTTP endpoints on faust's web server: ``/metrics`` (Prometheus) and
``/healthz`` (JSON, 503 when the sink is failing or the broker is unreachable), plus the
timer that publishes consumer lag.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    import faust

    from pipeline.faust_app import Worker

LAG_INTERVAL = 5.0
BROKER_STALE_AFTER = 30.0


def _consumer_lag(app: faust.App) -> dict[tuple[str, int], int]:
    consumer = app.consumer
    lag: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        read = consumer._read_offset.get(tp)  # faust keeps no public read position
        if high is not None:
            lag[(tp.topic, tp.partition)] = max(0, high - ((read + 1) if read is not None else 0))
    return lag


def install_web(app: faust.App, worker: Worker) -> None:
    state: dict[str, Any] = {"broker_ok_at": time.monotonic(), "broker_error": ""}

    @app.timer(interval=LAG_INTERVAL)
    async def publish_lag() -> None:
        try:
            lag = _consumer_lag(app)
            await app.consumer.topic_partitions(app.conf.id)  # cheap broker round trip
        except Exception as exc:  # broker gone: health goes red after BROKER_STALE_AFTER
            state["broker_error"] = f"{type(exc).__name__}: {exc}"
            return
        state["broker_ok_at"] = time.monotonic()
        state["broker_error"] = ""
        for (topic, partition), value in lag.items():
            worker.metrics.consumer_lag.labels(topic, str(partition)).set(value)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        body = generate_latest(worker.metrics.registry)
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        sinks = [worker.touchpoint_sink, worker.dead_letter_sink]
        broker_age = time.monotonic() - state["broker_ok_at"]
        problems = [f"sink {s.table}: {s.last_error}" for s in sinks if not s.healthy]
        if broker_age > BROKER_STALE_AFTER:
            problems.append(f"broker unreachable for {broker_age:.0f}s: {state['broker_error']}")
        body = {"status": "ok" if not problems else "failing", "problems": problems}
        return web.json(body, status=200 if not problems else 503)
