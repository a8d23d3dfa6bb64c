"""The worker's HTTP endpoints on faust's web server: ``/metrics`` (Prometheus) and
``/healthz`` (JSON; 503 when a sink is failing, the broker is unreachable, or the broker
lost data it had, as the memory-only embedded broker does when it restarts), plus the
timer that asks the broker for high-water marks and publishes consumer lag.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.metrics_handlers import MetricsRuntime, feed

if TYPE_CHECKING:
    import faust

    from pipeline.worker_context import Worker

log = logging.getLogger("touchpoint.health")
PROBE_INTERVAL = 5.0
BROKER_STALE_AFTER = 30.0
LOST_DATA_EXIT_AFTER = 15.0
"""Seconds a worker that saw the broker lose data stays up, paused and red, before it exits."""
EXIT_BROKER_LOST_DATA = 75


@dataclass
class BrokerHealth:
    ok_at: float = field(default_factory=time.monotonic)
    error: str = ""
    lost_data: str = ""
    last_highs: dict[Any, int] = field(default_factory=dict)

    def problems(self, now: float) -> list[str]:
        found = []
        if now - self.ok_at > BROKER_STALE_AFTER:
            found.append(f"broker unreachable for {now - self.ok_at:.0f}s: {self.error}")
        if self.lost_data:
            found.append(self.lost_data)
        return found


async def probe_broker(app: faust.App, worker: Worker, health: BrokerHealth) -> None:
    """One broker round trip: high-water marks of the assigned partitions, hence lag."""
    consumer = app.consumer
    tps = sorted(consumer.assignment())
    read: dict[Any, int | None] = getattr(
        consumer, "_read_offset", {}
    )  # faust has no public reader position
    try:
        highs = await consumer.highwaters(*tps) if tps else {}
    except Exception as exc:  # any broker failure: health goes red after BROKER_STALE_AFTER
        health.error = f"{type(exc).__name__}: {exc}"
        return
    health.ok_at, health.error = time.monotonic(), ""
    lost = [
        f"{tp.topic}[{tp.partition}]"
        for tp in tps
        if highs.get(tp, 0) < health.last_highs.get(tp, 0)
    ]
    if lost and not health.lost_data:  # sticky: the records are gone, someone has to look
        health.lost_data = (
            f"broker lost data (restarted?): end offsets went back on {', '.join(lost)}"
        )
        stop_on_lost_data(app, health.lost_data)
    health.last_highs.update(highs)
    for tp in tps:
        position = read.get(tp)
        lag = highs.get(tp, 0) - ((position + 1) if position is not None else 0)
        worker.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, lag))


def stop_on_lost_data(app: faust.App, reason: str) -> None:
    """Fail-stop: pause every partition, stay up red for :data:`LOST_DATA_EXIT_AFTER` s (the
    health endpoint and gauge say why), then exit without committing.

    A worker that carries on over an emptied broker holds read positions of records that no
    longer exist; committing them on shutdown or rebalance would make the restarted workers
    skip that many new records. Exiting with no clean-up commits nothing, so the next worker
    starts from what the new broker really holds.
    """
    consumer = app.consumer
    consumer.pause_partitions(consumer.assignment())
    log.critical("%s; paused, exiting in %.0fs without committing (code %d)",
                 reason, LOST_DATA_EXIT_AFTER, EXIT_BROKER_LOST_DATA)  # fmt: skip

    def leave() -> None:
        log.critical("exiting: %s", reason)
        logging.shutdown()
        os._exit(EXIT_BROKER_LOST_DATA)

    asyncio.get_running_loop().call_later(LOST_DATA_EXIT_AFTER, leave)


def install_web(app: faust.App, worker: Worker, runtime: MetricsRuntime | None = None) -> None:
    health = BrokerHealth()

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
