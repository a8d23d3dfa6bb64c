"""Fault 1: SIGKILL a worker every few seconds while simulated events stream in.

Workers share the partitions; events are produced at a steady pace while, every
``kill_every`` seconds, the oldest worker is killed with SIGKILL (no clean-up, no final
commit) and a replacement starts on a new web port. Afterwards the workers left keep running
until ClickHouse holds everything. Oracle: nothing lost, nothing duplicated after FINAL,
dead letters exact, final metric windows equal their recomputation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.testing.fault_inputs import RunSize
from pipeline.testing.faults import (
    FaultEnv,
    FaultResult,
    SteadyProducer,
    check_delivery,
    check_metrics,
    clickhouse,
    wait_drained,
)
from pipeline.testing.kafka import free_port
from pipeline.testing.stack import wait_for, worker_ready
from tests.faults.suite import Fault, Scale


@dataclass(frozen=True)
class Size(RunSize):
    kill_every: float
    drain_timeout: float


SIZES = {
    "short": Size(2200, 20_000, 4, 2, 34.0, 8.0, 120.0),
    "long": Size(22_000, 200_000, 6, 3, 200.0, 10.0, 600.0),
}


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    settings = env.settings(partitions=size.partitions)
    config = SimulationConfig(
        seed=11, start=datetime.now(UTC) - timedelta(hours=2), customers=size.customers,
        max_events=size.events, malformed_fraction=0.01, duplicate_fraction=0.02,
    )  # fmt: skip
    events = list(simulate(config))
    workers = [
        env.start_worker(settings, i, worker_web_port=free_port()) for i in range(size.workers)
    ]
    producer = SteadyProducer(settings, events, size.produce_seconds)
    producer.start()
    kills, t0 = int(size.produce_seconds // size.kill_every), time.monotonic()
    crashes: list[str] = []
    killed = 0
    for n in range(1, kills + 1):
        time.sleep(max(0.0, t0 + size.kill_every * n - time.monotonic()))
        victim = workers.pop(0)  # the oldest one: ready and owning partitions
        if victim.alive:
            victim.kill()
            killed += 1
        else:  # faust crashed it (e.g. a rebalance assertion): a supervisor restarts it
            crashes.append(_crash_line(victim.log_tail(20_000)))
        index = size.workers + n
        workers.append(env.start_worker(settings, index, wait=False, worker_web_port=free_port()))
    producer.finish(size.produce_seconds + 120)
    for i, worker in enumerate(workers):
        if not worker.alive:  # crashed after the last kill: replaced like the others
            crashes.append(_crash_line(worker.log_tail(20_000)))
            index = size.workers + kills + 1 + i
            workers[i] = env.start_worker(settings, index, wait=False, worker_web_port=free_port())
        wait_for(lambda w=workers[i]: worker_ready(w), 90, "replacement worker ready")
    client = clickhouse(settings)
    drain = wait_drained(client, events, size.drain_timeout)
    delivery = check_delivery(client, events)
    figures = {"events": len(events), "kills": killed, **delivery.figures()}
    figures["workers crashed by themselves (replaced)"] = len(crashes)
    if crashes:
        figures["crash causes"] = "; ".join(sorted(set(crashes)))
    figures["drain after last produce (s)"] = round(drain, 1)
    problems = delivery.problems() + check_metrics(client, settings, events)
    return FaultResult("kill-worker", figures, problems)


def _crash_line(log: str) -> str:
    """The last exception line of a worker's log (why it died)."""
    lines = [ln for ln in log.splitlines() if "Error" in ln or "Exception" in ln]
    return lines[-1].strip()[:160] if lines else "unknown (no exception in the log)"


FAULT = Fault(1, "kill-worker", "SIGKILL a worker every 8-10 s while events flow", run)
