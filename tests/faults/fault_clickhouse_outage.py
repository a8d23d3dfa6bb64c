"""Fault 3: ClickHouse is unreachable for a while (60 s long, 16 s short) while events flow.

The env's ClickHouse server is stopped mid-stream and later started again on the same port
and data directory. Meanwhile, every second, the fault samples the worker's ``/healthz``
and the consumer groups' committed offsets. Oracle, besides the suite's (nothing lost,
nothing duplicated after FINAL, dead letters exact, metrics recomputed): ``/healthz`` went
red naming the touchpoints sink and came back green; the worker recovered alone (never
exited); and no sink committed past what ClickHouse stored before the outage: every
``<prefix>.journeyed`` (``dead letters``) message below an offset committed during the
outage has all its touchpoints (dead letters) stored with ``ingested_at`` before the stop.

The raw topic's offsets are reported, not judged: the ingest stage commits them once its
outputs are delivered to the internal topics (``<prefix>.valid``, the DLQ), not once stored,
so they legitimately run ahead of ClickHouse; the sinks' offsets are the ones that must not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.settings import Settings
from pipeline.testing.fault_offsets import (
    Offsets,
    committed_offsets,
    end_offsets,
    ingest_group,
    lag,
    messages_below,
)
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
from pipeline.testing.stack import Process, wait_for
from pipeline.testing.worker_health import health
from schemas.records import DeadLetter, TouchpointBatch
from tests.faults.suite import Fault, Scale


@dataclass(frozen=True)
class Size:
    customers: int
    events: int
    partitions: int
    produce_seconds: float
    outage_at: float  # seconds after the producer started
    outage_seconds: float
    drain_timeout: float


SIZES = {
    "short": Size(1000, 6000, 2, 18.0, 3.0, 16.0, 180.0),
    "long": Size(8000, 60_000, 4, 90.0, 20.0, 60.0, 600.0),
}


@dataclass
class Samples:
    """What the fault saw each second: health, committed offsets, lag."""

    settings: Settings
    red: list[str] = field(default_factory=list)
    journeyed: Offsets = field(default_factory=dict)  # highest committed during the outage
    dlq: Offsets = field(default_factory=dict)
    raw: Offsets = field(default_factory=dict)
    peak_raw_lag: int = 0
    peak_journeyed_lag: int = 0
    errors: int = 0
    first_error: str = ""

    def take(self, port: int, during_outage: bool) -> None:
        s = self.settings
        status, problems = health(port)
        if status == "failing":
            self.red += [p for p in problems if p not in self.red]  # every reason seen
        try:
            group = committed_offsets(s, s.app_id, s.topic("journeyed"))
            raw = committed_offsets(s, ingest_group(s), s.raw_topic)
            self.peak_raw_lag = max(
                self.peak_raw_lag, lag(end_offsets(s, s.raw_topic, s.partitions), raw)
            )
            ends = end_offsets(s, s.topic("journeyed"), s.partitions)
            self.peak_journeyed_lag = max(self.peak_journeyed_lag, lag(ends, group))
            if during_outage:
                _raise(self.journeyed, group)
                _raise(self.dlq, committed_offsets(s, s.app_id, s.dlq_topic))
                _raise(self.raw, raw)
        except Exception as exc:  # the broker is busy; a missed sample is only a missed sample
            self.errors += 1
            self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"[:200]


def _raise(highest: Offsets, seen: Offsets) -> None:
    for partition, offset in seen.items():
        highest[partition] = max(offset, highest.get(partition, 0))


def _stored_before(client: Client, table: str, column: str, before: datetime) -> set[object]:
    q = f"SELECT DISTINCT {column} FROM {table} WHERE ingested_at < {{t:DateTime64(3, 'UTC')}}"
    return {r[0] for r in client.query(q, parameters={"t": before}).result_rows}


def committed_unstored(client: Client, samples: Samples, down_at: datetime) -> tuple[int, int]:
    """(touchpoints, dead letters) below an offset committed during the outage that were
    not stored before it began: each would be a commit past the last successful insert."""
    s = samples.settings
    stored = _stored_before(client, "touchpoints", "event_id", down_at)
    ids = {
        tp.event_id
        for value in messages_below(s, s.topic("journeyed"), samples.journeyed)
        for tp in TouchpointBatch.model_validate_json(value).records
    }
    where = "tuple(src_topic, toInt64(src_partition), toInt64(src_offset))"  # one dead letter each
    stored_dl = _stored_before(client, "dead_letters", where, down_at)
    srcs = set()
    for value in messages_below(s, s.dlq_topic, samples.dlq):
        src = DeadLetter.model_validate_json(value).src
        srcs.add((src.topic, src.partition, src.offset))
    return len(ids - stored), len(srcs - stored_dl)


def _raw_ahead(client: Client, settings: Settings, committed: Offsets, down_at: datetime) -> int:
    """Raw offsets committed during the outage past the last raw offset stored before it."""
    q = (
        "SELECT src_partition, max(src_offset) FROM touchpoints WHERE ingested_at < "
        "{t:DateTime64(3, 'UTC')} AND src_topic = {topic:String} GROUP BY src_partition"
    )
    rows = client.query(q, parameters={"t": down_at, "topic": settings.raw_topic}).result_rows
    stored = {int(p): int(o) + 1 for p, o in rows}
    return sum(max(0, o - stored.get(p, 0)) for p, o in committed.items())


def _committed_once(settings: Settings) -> bool:
    """Both sinks (touchpoints on the journeyed topic, dead letters) have committed once."""
    group, topics = settings.app_id, (settings.topic("journeyed"), settings.dlq_topic)
    return all(committed_offsets(settings, group, topic) for topic in topics)


def _outage(env: FaultEnv, size: Size, samples: Samples, port: int) -> tuple[datetime, float]:
    """Stop ClickHouse for ``outage_seconds``, sampling; returns (stop time, seconds down)."""
    assert env.clickhouse is not None, "fault 3 needs its own ClickHouse (needs_own_services)"
    env.clickhouse.stop()
    down_at, stopped = datetime.now(UTC), time.monotonic()
    while time.monotonic() - stopped < size.outage_seconds:
        samples.take(port, during_outage=True)
        time.sleep(1.0)
    env.clickhouse.start()  # same port, same data directory
    return down_at, time.monotonic() - stopped


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    settings = env.settings(partitions=size.partitions)
    config = SimulationConfig(
        seed=33, start=datetime.now(UTC) - timedelta(hours=2), customers=size.customers,
        max_events=size.events, malformed_fraction=0.01, duplicate_fraction=0.02,
    )  # fmt: skip
    events = list(simulate(config))
    port = free_port()
    worker: Process = env.start_worker(settings, 0, worker_web_port=port)
    samples = Samples(settings)
    producer = SteadyProducer(settings, events, size.produce_seconds)
    producer.start()
    time.sleep(size.outage_at)
    wait_for(lambda: _committed_once(settings), 120, "the sinks' first commits")  # else: no check
    down_at, down_for = _outage(env, size, samples, port)
    client = clickhouse(settings)
    drain = wait_drained(client, events, size.drain_timeout, lambda: samples.take(port, False))
    producer.finish(60)
    green = wait_for(lambda: health(port)[0] == "ok", 90, "/healthz green again")
    delivery = check_delivery(client, events)
    unstored_tp, unstored_dl = committed_unstored(client, samples, down_at)
    figures: dict[str, Figure] = {
        "events": len(events), **delivery.figures(), "outage (s)": round(down_for, 1),
        "healthz red during outage": bool(samples.red), "healthz green after": bool(green),
        "peak raw lag (events)": samples.peak_raw_lag,
        "peak journeyed lag (batch msgs)": samples.peak_journeyed_lag,
        "drain after ClickHouse back (s)": round(drain, 1),
        "sink commits past stored: touchpoints": unstored_tp, "... dead letters": unstored_dl,
        "raw offsets committed ahead of stored (by design)": _raw_ahead(
            client, settings, samples.raw, down_at),
        "offset samples failed": samples.errors,
    }  # fmt: skip
    problems = delivery.problems()
    if not any(p.startswith("sink ") for p in samples.red):
        problems.append(
            f"/healthz never named a failing ClickHouse sink during the outage: {samples.red}"
        )
    if not worker.alive:
        problems.append(f"the worker exited (code {worker.popen and worker.popen.returncode})")
    if not samples.journeyed or not samples.dlq:
        problems.append(
            f"no committed sink offsets sampled during the outage (journeyed {samples.journeyed}, "
            f"dlq {samples.dlq}; {samples.errors} samples failed, first: {samples.first_error}): "
            "the commit check could not run"
        )
    if unstored_tp or unstored_dl:
        problems.append(
            f"sinks committed past ClickHouse: {unstored_tp} touchpoints, {unstored_dl} dead letters"
        )
    problems += check_metrics(client, settings, events)
    return FaultResult("clickhouse-outage", figures, problems)


FAULT = Fault(
    3, "clickhouse-outage", "ClickHouse unreachable 16-60 s while events flow", run,
    needs_own_services=True,
)  # fmt: skip
