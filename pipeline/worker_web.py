"""The worker's HTTP endpoints on faust's web server: ``/metrics`` (Prometheus) and
``/healthz`` (JSON; 503 when a sink is failing, the broker is unreachable, or the broker
lost data it had, as the memory-only embedded broker does when it restarts), plus the
timer that asks the broker for high-water marks and publishes consumer lag.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.broker_watch import BrokerHealth, guard_commits, read_highs
from pipeline.metrics_handlers import MetricsRuntime, feed

if TYPE_CHECKING:
    import faust

    from pipeline.worker_context import Worker

log = logging.getLogger("touchpoint.health")
PROBE_INTERVAL = 5.0


async def probe_broker(app: faust.App, worker: Worker, health: BrokerHealth) -> None:
    """End offsets of the assigned partitions (lost data fail-stops), hence consumer lag."""
    consumer = app.consumer
    tps = consumer.assignment()
    highs = await read_highs(app, health, tps)
    read: dict[Any, int | None] = getattr(
        consumer, "_read_offset", {}
    )  # faust has no public reader position
    for tp in tps if highs else ():
        position = read.get(tp)
        lag = highs.get(tp, 0) - ((position + 1) if position is not None else 0)
        worker.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, lag))


def install_web(app: faust.App, worker: Worker, runtime: MetricsRuntime | None = None) -> None:
    health = BrokerHealth()

    @app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def check_commits() -> None:
        guard_commits(app, health)

    @app.page("/stages")
    async def stages(web: Any, request: Any) -> Any:
        """The live stage metrics feed (only the worker that owns the metrics partition
        has it: ``owner`` says whether this one does)."""
        return web.bytes(orjson.dumps(feed(runtime)), content_type="application/json")

    def problems() -> list[str]:
        sinks = worker.sinks.values()
        found = [f"sink {s.table}: {s.last_error}" for s in sinks if not s.healthy]
        found += health.problems(time.monotonic())
        worker.metrics.healthy.set(0 if found else 1)
        return found

    @app.timer(interval=PROBE_INTERVAL)  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def publish_lag() -> None:
        await probe_broker(app, worker, health)
        for problem in problems():
            log.error("unhealthy: %s", problem)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        body = generate_latest(worker.metrics.registry)
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        found = problems()
        body = {"status": "failing" if found else "ok", "problems": found}
        return web.json(body, status=503 if found else 200)
