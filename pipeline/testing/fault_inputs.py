"""Inputs and extra checks for the data faults (poison, duplicates, late merges, schema
versions): simulated runs, events rewritten into poison or other schema versions with the
dead-letter reason validation must give them, the raw topic's messages, and a
worker's crash record.

A rewritten event is still a :class:`SimEvent`, so :func:`pipeline.testing.faults.check_delivery`
judges it: ``malformed`` set means "must be dead-lettered with this reason", ``None`` means
"must be stored once".
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from pipeline.kafka_config import KafkaConfig
from pipeline.producers.sim_models import SimEvent
from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.settings import Settings
from pipeline.testing.kafka import read_topic
from pipeline.testing.stack import Process
from schemas.records import DeadLetterReason

Body = dict[str, Any]


@dataclass(frozen=True)
class RunSize:
    """How big one run of a fault is: what every fault sizes (each adds its own knobs)."""

    customers: int
    events: int
    partitions: int
    workers: int
    produce_seconds: float


@dataclass(frozen=True)
class Size(RunSize):
    """How big one run of a data fault is (poison, duplicates, late-merges, schema-versions)."""

    drain_timeout: float


def simulated(seed: int, customers: int, events: int, **knobs: Any) -> list[SimEvent]:
    """A simulated run starting two hours ago (its windows become final while it drains)."""
    start = datetime.now(UTC) - timedelta(hours=2)
    config = SimulationConfig(
        seed=seed, start=start, customers=customers, max_events=events, **knobs
    )
    return list(simulate(config))


def with_body(
    event: SimEvent,
    change: Callable[[Body], Any],
    malformed: DeadLetterReason | None = None,
    raw: Callable[[bytes], bytes] | None = None,
) -> SimEvent:
    """``event`` with its JSON body changed in place by ``change`` (then its bytes by
    ``raw``), judged by ``malformed``: the reason it must be dead-lettered with, or None."""
    body: Body = orjson.loads(event.payload)
    change(body)
    payload = orjson.dumps(body)
    payload = raw(payload) if raw is not None else payload
    event_id = body.get("event_id") if isinstance(body.get("event_id"), str) else None
    return event._replace(payload=payload, event_id=event_id, malformed=malformed)


def replaceable(events: Sequence[SimEvent]) -> list[int]:
    """Indexes of valid events whose id occurs once (no duplicate copy to contradict a
    rewrite of it)."""
    seen: dict[str, int] = {}
    for e in events:
        if e.event_id is not None:
            seen[e.event_id] = seen.get(e.event_id, 0) + 1
    return [
        i
        for i, e in enumerate(events)
        if e.malformed is None and not e.duplicate and seen.get(e.event_id or "") == 1
    ]


def pick(events: Sequence[SimEvent], count: int, seed: int) -> list[int]:
    """``count`` replaceable indexes spread over the run, in order."""
    pool = replaceable(events)
    if count > len(pool):
        raise ValueError(f"cannot pick {count} events to rewrite out of {len(pool)} replaceable")
    return sorted(random.Random(seed).sample(pool, count))


def raw_payloads(settings: Settings, timeout: float = 180.0) -> Counter[bytes]:
    """Every message of the raw topic, counted by its bytes (an assign() read until the
    topic is quiet: Tansu's ``end_offsets()`` lags the high watermark, see
    :mod:`pipeline.testing.kafka`)."""
    records = read_topic(KafkaConfig.from_settings(settings), settings.raw_topic, timeout, idle=3.0)
    return Counter(r.value for r in records)


def dead_letters_by(client: Client, where: str = "1") -> dict[tuple[str, str], int]:
    """Dead letters per (reason, stage), one per raw offset."""
    q = (
        "SELECT reason, stage, uniqExact(src_topic, src_partition, src_offset) "
        f"FROM dead_letters WHERE {where} GROUP BY reason, stage"
    )
    return {(str(r[0]), str(r[1])): int(r[2]) for r in client.query(q).result_rows}


@dataclass
class CrashWatch:
    """A worker's process id at start; at the end, whether the same process is still alive
    (a crash would end it: nothing restarts a worker here) and how many tracebacks its log
    shows. ("Worker ready" is no restart count: faust logs it again after each rebalance.)"""

    process: Process
    pid: int = 0

    def __post_init__(self) -> None:
        assert self.process.popen is not None, "start the worker before watching it"
        self.pid = self.process.popen.pid

    def crashes(self) -> int:
        popen = self.process.popen
        return 0 if popen is not None and popen.pid == self.pid and self.process.alive else 1

    def tracebacks(self) -> int:
        return self.process.log_tail(50_000_000).count("Traceback (most recent call last)")

    def problems(self, name: str) -> list[str]:
        found = []
        if self.crashes():
            found.append(f"{name}: exited (pid {self.pid}): {self.process.log_tail(500)}")
        if self.tracebacks():
            found.append(f"{name}: {self.tracebacks()} tracebacks in {self.process.log_path}")
        return found
