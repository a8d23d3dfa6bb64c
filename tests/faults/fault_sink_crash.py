"""Fault 2: the worker dies in each window of a touchpoints sink write.

One worker at a time runs the whole pipeline, armed with one failpoint on the ``touchpoints``
sink that exits the process (``os._exit``: no clean-up, no commit) at its n-th hit:

* ``sink.before_insert``: the batch was taken from ``<prefix>.journeyed``, nothing sent;
* ``sink.during_insert``: the real insert is in flight, half its body on the wire
  (:mod:`pipeline.sink_interrupt`), when the process dies;
* ``sink.after_insert``: ClickHouse stored the batch; it was neither acked nor committed.

When it is dead, a replacement armed for the next window starts (then a clean one), while
events keep flowing. Oracle: nothing lost, nothing duplicated after FINAL, dead letters
exact, final metric windows equal their recomputation. Figures: the duplicates before FINAL,
and for each ``after_insert`` crash whether its batch was stored twice (the replay's dedup
token differs when the replacement takes a different run of offsets; FINAL collapses it).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.settings import Settings
from pipeline.testing.fault_offsets import token_ranges, touchpoint_ids
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
from pipeline.testing.kafka import free_port
from pipeline.testing.stack import Process, wait_for, worker_ready
from tests.faults.suite import Fault, Scale

WINDOWS = ("sink.before_insert", "sink.during_insert", "sink.after_insert")
EXIT_CODE = 137  # pipeline.failpoints: os._exit(137)


@dataclass(frozen=True)
class Size:
    customers: int
    events: int
    partitions: int
    produce_seconds: float
    rounds: int  # each round crashes once in each window
    nth: int  # the failpoint fires at this hit of the touchpoints sink
    drain_timeout: float


SIZES = {
    "short": Size(1000, 6000, 2, 20.0, 1, 1, 150.0),
    "long": Size(12_000, 100_000, 4, 150.0, 3, 3, 600.0),
}


@dataclass
class Crashes:
    by_window: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WINDOWS, 0))
    after_insert_tokens: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def record(self, window: str, worker: Process) -> None:
        log = worker.log_tail(400_000)
        code = worker.popen.returncode if worker.popen is not None else None
        fired = re.findall(rf"failpoint {re.escape(window)} at batch (\S+)", log)
        if code != EXIT_CODE or not fired:
            self.problems.append(f"{window}: worker exited {code} without the failpoint firing")
            return
        self.by_window[window] += 1
        if window == "sink.after_insert":
            self.after_insert_tokens.append(fired[-1])


def _armed(window: str, nth: int) -> str:
    return f"{window}=exit~touchpoints@{nth}"


def _crash_in_each_window(
    env: FaultEnv, settings: Settings, size: Size, first: Process, timeout: float
) -> tuple[Crashes, Process]:
    """Wait for each armed worker to die, then start the next one; the last one is clean."""
    crashes, worker = Crashes(), first
    plan = list(WINDOWS) * size.rounds
    for i, window in enumerate(plan):
        try:
            wait_for(lambda w=worker: not w.alive, timeout, f"the {window} crash")
        except AssertionError as exc:
            crashes.problems.append(f"{window} never fired: {exc}")
            worker.kill()
        else:
            crashes.record(window, worker)
        over = {"failpoints": _armed(plan[i + 1], size.nth)} if i + 1 < len(plan) else {}
        worker = env.start_worker(settings, i + 1, wait=False, worker_web_port=free_port(), **over)
    return crashes, worker


def _replayed_rows(client: Client, settings: Settings, tokens: list[str]) -> tuple[int, int]:
    """(rows in the after_insert crashes' batches, how many of their ids are stored twice)."""
    rows = twice = 0
    for token in tokens:
        topic, ranges = token_ranges(token)
        ids = sorted(touchpoint_ids(settings, topic, ranges))
        q = "SELECT count() - uniqExact(event_id) FROM touchpoints WHERE event_id IN {ids:Array(String)}"
        rows += len(ids)
        twice += int(client.query(q, parameters={"ids": ids}).result_rows[0][0]) if ids else 0
    return rows, twice


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    settings = env.settings(partitions=size.partitions)
    config = SimulationConfig(
        seed=22, start=datetime.now(UTC) - timedelta(hours=2), customers=size.customers,
        max_events=size.events, malformed_fraction=0.01, duplicate_fraction=0.02,
    )  # fmt: skip
    events = list(simulate(config))
    started = time.monotonic()
    first = env.start_worker(
        settings, 0, worker_web_port=free_port(), failpoints=_armed(WINDOWS[0], size.nth)
    )
    producer = SteadyProducer(settings, events, size.produce_seconds)
    producer.start()
    crashes, last = _crash_in_each_window(env, settings, size, first, 120.0)
    producer.finish(size.produce_seconds + 120)
    wait_for(lambda: worker_ready(last), 90, "the clean worker ready")
    client = clickhouse(settings)
    drain = wait_drained(client, events, size.drain_timeout)
    delivery = check_delivery(client, events)
    batch_rows, twice = _replayed_rows(client, settings, crashes.after_insert_tokens)
    figures: dict[str, Figure] = {"events": len(events)}
    figures.update({f"crashes {w.removeprefix('sink.')}": n for w, n in crashes.by_window.items()})
    figures.update(delivery.figures())
    figures["after_insert batch rows"] = batch_rows
    figures["after_insert rows stored twice (token missed replay)"] = twice
    figures["drain after last produce (s)"] = round(drain, 1)
    figures["wall (s)"] = round(time.monotonic() - started, 1)
    problems = crashes.problems + delivery.problems() + check_metrics(client, settings, events)
    return FaultResult("sink-crash", figures, problems)


FAULT = Fault(2, "sink-crash", "kill the worker before, during and after a touchpoints insert", run)
