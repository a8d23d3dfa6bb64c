"""Fault 10: the broker restarts and comes back empty.

The embedded broker (Tansu, memory storage) keeps everything in memory: a restart loses
every topic, record, committed offset and group. Zero loss is impossible by design, so the
oracle is different: the failure must be reported loudly and fast, and the pipeline must
neither stall in silence nor crash-loop.

Run: workers process a first batch of events (checked by the usual oracle: ClickHouse keeps
them), a ``touchpoint simulate`` process keeps producing, then the broker is stopped and a
new one started on the same port. Measured: seconds until each worker's ``/healthz`` answers
503 and its ``touchpoint_worker_healthy`` gauge reads 0, and until the simulate CLI exits
non-zero naming the lost data (all required within 30 s). Then each worker must fail-stop:
paused and red for ``LOST_DATA_EXIT_AFTER`` seconds, then exit with ``EXIT_BROKER_LOST_DATA``
without committing (a worker that carried on would commit read positions of records the new
broker never had, and its successors would skip that many new records). Then recovery the way
an operator does it: ``create-topics`` again, restart the workers, produce a second batch, which
must be delivered exactly once (lost 0, duplicates 0 after FINAL); the metric windows
after recovery are reported, not judged: the workers' state went with the broker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.broker import create_topics, topic_specs
from pipeline.broker_watch import EXIT_BROKER_LOST_DATA, LOST_DATA_EXIT_AFTER
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.sim_models import SimEvent
from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.settings import Settings
from pipeline.testing.fault_inputs import RunSize
from pipeline.testing.faults import (
    FaultEnv,
    FaultResult,
    Figure,
    SteadyProducer,
    check_delivery,
    check_metrics,
    clickhouse,
    wait_drained,
)
from pipeline.testing.health import RedWatch, simulate_cli
from pipeline.testing.kafka import EmbeddedTansu, free_port
from pipeline.testing.stack import Process
from tests.faults.suite import Fault, Scale

REPORT_WITHIN = 30.0


@dataclass(frozen=True)
class Size(RunSize):
    recover: bool
    """Go on with the operator's recovery (the long form; the short form stops at the
    reports, the part the test command must keep fast)."""


SIZES = {
    "short": Size(300, 2000, 2, 1, 4.0, recover=False),
    "long": Size(3000, 20_000, 4, 2, 20.0, recover=True),
}


def batch(size: Size, seed: int, hours_ago: float) -> list[SimEvent]:
    config = SimulationConfig(
        seed=seed, start=datetime.now(UTC) - timedelta(hours=hours_ago),
        customers=size.customers, max_events=size.events, malformed_fraction=0.01,
        duplicate_fraction=0.02,
    )  # fmt: skip
    return list(simulate(config))


def produce(settings: Settings, events: list[SimEvent], seconds: float) -> None:
    producer = SteadyProducer(settings, events, seconds)
    producer.start()
    producer.finish(seconds + 120)


def restart_broker(env: FaultEnv) -> float:
    """Stop the broker and start an empty one on the same port; seconds it was away."""
    if env.broker is None:
        raise AssertionError("fault 10 needs its own broker (needs_own_services=True)")
    started, port = time.monotonic(), env.broker.port
    env.broker.stop()
    env.broker = EmbeddedTansu(port=port).start()
    return time.monotonic() - started


def start_workers(env: FaultEnv, settings: Settings, first: int, count: int) -> list[Process]:
    return [
        env.start_worker(settings, first + i, worker_web_port=free_port()) for i in range(count)
    ]


def fail_stopped(workers: list[Process], within: float, figures: dict[str, Figure]) -> list[str]:
    """Wait for every worker to exit on its own; their exit codes go in ``figures``."""
    deadline = time.monotonic() + within
    while any(w.alive for w in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    codes = [w.popen.poll() if w.popen else None for w in workers]
    figures["worker exit codes on the empty broker"] = " ".join(
        "still up" if c is None else str(c) for c in codes
    )
    return [
        f"worker {i}: exit code {c}, not {EXIT_BROKER_LOST_DATA} (fail-stop on lost data)"
        for i, c in enumerate(codes)
        if c != EXIT_BROKER_LOST_DATA
    ]


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    settings = env.settings(partitions=size.partitions)
    before = batch(size, seed=10, hours_ago=3)
    workers = start_workers(env, settings, 0, size.workers)
    produce(settings, before, size.produce_seconds)
    client = clickhouse(settings)
    wait_drained(client, before, 120)
    problems = [f"before the restart: {p}" for p in check_delivery(client, before).problems()]
    cli = simulate_cli(settings, settings.data_dir / "simulate.log")
    time.sleep(3.0)  # the CLI has had acknowledgements from the first broker
    t0 = time.monotonic()
    away = restart_broker(env)
    watch = RedWatch(workers, cli, t0)
    watch.run(REPORT_WITHIN + 10)
    figures: dict[str, Figure] = {
        "events before restart": len(before),
        "broker away (s)": round(away, 1),
    }
    figures |= watch.figures()
    problems += watch.problems(REPORT_WITHIN)
    problems += fail_stopped(workers, REPORT_WITHIN + LOST_DATA_EXIT_AFTER + 5, figures)
    if not size.recover:
        cli.stop()
        return FaultResult("broker-restart", figures, problems)
    create_topics(KafkaConfig.from_settings(settings), topic_specs(settings))  # the operator
    for worker in workers:
        worker.stop()
    cli.stop()
    after = batch(size, seed=11, hours_ago=2)
    fresh = start_workers(env, settings, size.workers, size.workers)
    produce(settings, after, size.produce_seconds)
    try:
        drain = wait_drained(client, before + after, 180)
    except AssertionError as exc:  # recovery failed: keep the figures, say where it stuck
        tails = " | ".join(w.log_tail(400).replace("\n", " ") for w in fresh)
        return FaultResult("broker-restart", figures, [*problems, f"recovery: {exc}; {tails}"])
    delivery = check_delivery(client, before + after)
    figures |= {f"after recovery: {k}": v for k, v in delivery.figures().items()}
    figures["after recovery: drain (s)"] = round(drain, 1)
    figures["after recovery: healthz"] = ", ".join(watch.status(w)[0] for w in fresh)
    # the workers' state (journeys, metric windows) went with the broker's memory: the
    # windows after recovery are counted from scratch, so they need not equal a recomputation
    # over both batches; reported, not judged (a durable broker keeps them equal: fault 1)
    mismatched = check_metrics(client, settings, before + after)
    figures["after recovery: metric windows unlike recomputation (state lost)"] = (
        mismatched[-1] if len(mismatched) > 5 else len(mismatched)
    )
    problems += delivery.problems()
    return FaultResult("broker-restart", figures, problems)


FAULT = Fault(
    10,
    "broker-restart",
    "the in-memory broker restarts empty: red within 30 s, no silent stall, recovery",
    run,
    needs_own_services=True,
)
