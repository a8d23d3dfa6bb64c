"""Fault 9: rebalance churn, a worker added or removed every few seconds.

Events stream in at a steady pace while, every ``churn_every`` seconds, the group changes:
alternately a new worker joins (on a new web port) or the oldest one leaves cleanly
(SIGTERM: it stops its streams, commits and leaves the group; a stop that hangs is cut short
by the worker's shutdown deadline, exit code 76, and counted). Every change is a rebalance
that moves partitions between workers while batches are in flight. The workers left then
drain everything. Oracle: nothing lost, nothing duplicated after FINAL, dead letters exact,
final metric windows equal their recomputation, every leaver gone (exit 0 or 76); figures:
joins, leaves, the leavers' exit codes, duplicate rows before FINAL (re-deliveries the
rebalances caused) and drain time.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.settings import Settings
from pipeline.shutdown_deadline import EXIT_SHUTDOWN_DEADLINE
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
from pipeline.testing.stack import Process, wait_for, worker_ready
from tests.faults.suite import Fault, Scale


@dataclass(frozen=True)
class Size(RunSize):
    churn_every: float
    drain_timeout: float


SIZES = {
    "short": Size(1200, 12_000, 4, 2, 26.0, 8.0, 150.0),
    "long": Size(22_000, 150_000, 6, 2, 200.0, 20.0, 600.0),
}


class Churn:
    """Alternately adds a worker and removes the oldest (SIGTERM, not waited for)."""

    def __init__(self, env: FaultEnv, settings: Settings, workers: list[Process]) -> None:
        self.env, self.settings, self.workers = env, settings, workers
        self.leavers: list[Process] = []
        self.died: list[str] = []
        self.joins = 0
        self.next_index = len(workers)

    def step(self, n: int) -> None:
        if n % 2:
            victim = self.workers.pop(0)
            if not victim.alive:  # a finding, not the end of the run: say why, go on
                self.died.append(last_error(victim))
                return
            assert victim.popen is not None
            victim.popen.terminate()
            self.leavers.append(victim)
            return
        worker = self.env.start_worker(
            self.settings, self.next_index, wait=False, worker_web_port=free_port()
        )
        self.workers.append(worker)
        self.next_index += 1
        self.joins += 1

    def exit_codes(self) -> list[int | None]:
        codes = []
        for leaver in self.leavers:
            assert leaver.popen is not None
            try:
                codes.append(leaver.popen.wait(60))
            except subprocess.TimeoutExpired:
                leaver.kill()
                codes.append(None)
        return codes


def last_error(worker: Process) -> str:
    """The last error line of a worker's log (its exit cause)."""
    lines = [ln for ln in worker.log_tail(20_000).splitlines() if "Error" in ln or "CRIT" in ln]
    return (lines[-1].strip() if lines else worker.log_tail(300))[:300]


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    settings = env.settings(partitions=size.partitions)
    config = SimulationConfig(
        seed=9, start=datetime.now(UTC) - timedelta(hours=2), customers=size.customers,
        max_events=size.events, malformed_fraction=0.01, duplicate_fraction=0.02,
    )  # fmt: skip
    events = list(simulate(config))
    workers = [
        env.start_worker(settings, i, worker_web_port=free_port()) for i in range(size.workers)
    ]
    churn = Churn(env, settings, workers)
    producer = SteadyProducer(settings, events, size.produce_seconds)
    producer.start()
    changes, t0 = int(size.produce_seconds // size.churn_every), time.monotonic()
    for n in range(changes):
        time.sleep(max(0.0, t0 + size.churn_every * (n + 1) - time.monotonic()))
        churn.step(n)
    producer.finish(size.produce_seconds + 120)
    churn.died += [last_error(w) for w in workers if not w.alive]
    workers[:] = [w for w in workers if w.alive]
    if not workers:  # everyone died: one more so the oracle can say what was lost
        workers.append(env.start_worker(settings, churn.next_index, worker_web_port=free_port()))
    for worker in workers:
        wait_for(lambda w=worker: worker_ready(w), 90, "joined worker ready")
    client = clickhouse(settings)
    drain = wait_drained(client, events, size.drain_timeout)
    delivery = check_delivery(client, events)
    codes = churn.exit_codes()
    figures = {
        "events": len(events), "churn every (s)": size.churn_every, "joins": churn.joins,
        "leaves": len(churn.leavers), "leaver exit codes": " ".join(map(str, codes)) or "-",
        "leavers cut short by the shutdown deadline": codes.count(EXIT_SHUTDOWN_DEADLINE),
        "workers at the end": len(workers), "workers that died by themselves": len(churn.died),
        **delivery.figures(),
        "drain after last produce (s)": round(drain, 1),
    }  # fmt: skip
    problems = delivery.problems() + check_metrics(client, settings, events)
    problems += leaver_problems(codes)
    return FaultResult("rebalance-churn", figures, problems)


def leaver_problems(codes: list[int | None]) -> list[str]:
    """A leaver exits 0, or with the shutdown deadline's code when its stop hung (a finding
    reported in the figures, with the stuck stacks in its log; nothing is lost by it). A
    leaver still up after it, or with any other code, is a problem."""
    bad = [c for c in codes if c not in (0, EXIT_SHUTDOWN_DEADLINE)]
    return [f"a leaver did not stop: exit codes {codes}"] if bad else []


FAULT = Fault(9, "rebalance-churn", "a worker joins or leaves (SIGTERM) every 8-20 s", run)
