"""Fault 8: a 10x traffic spike, half of it from one hot customer.

Simulated events are produced at a steady base rate, then at ten times that rate for a
while, then at the base rate again. During the spike every other message belongs to one
customer: copies of that customer's own events (same identifiers, hence the same key and
the same raw partition) with fresh event ids and the event times of the base traffic they
are interleaved with. The hot partition's worker gets half the spike on its own.

While producing and draining, a sampler records every second the end-to-end backlog
(messages the broker acknowledged that are not in ClickHouse yet; Tansu does not give the
group's committed offsets back, see :class:`pipeline.testing.load.Backlog`) and the
resident memory (VmRSS) of every worker. Oracle: nothing lost, nothing duplicated
after FINAL, dead letters exact, final metric windows equal their recomputation. Figures:
max backlog and when, drain time after the last produce, peak worker memory against the
memory before the spike.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from pipeline.producers.sim_models import SimEvent
from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.testing.faults import (
    FaultEnv,
    FaultResult,
    Figure,
    check_delivery,
    check_metrics,
    clickhouse,
    wait_drained,
)
from pipeline.testing.kafka import free_port
from pipeline.testing.load import Backlog, Sampler, ScheduledProducer, phases, rss_kib
from pipeline.testing.stack import Process
from tests.faults.suite import Fault, Scale


@dataclass(frozen=True)
class Size:
    customers: int
    partitions: int
    workers: int
    base_rate: float
    before: float
    spike: float
    after: float
    drain_timeout: float


SIZES = {
    "short": Size(1500, 4, 2, 100.0, 6.0, 8.0, 6.0, 150.0),
    "long": Size(12_000, 6, 3, 150.0, 40.0, 40.0, 40.0, 600.0),
}
SPIKE = 10


def hot_events(base: list[SimEvent], count: int) -> list[SimEvent]:
    """``count`` copies of the busiest customer's events under its most used key, each with
    a fresh event id (the event times are set when they are interleaved)."""
    valid = [e for e in base if e.malformed is None and not e.duplicate and e.key is not None]
    key = Counter(e.key for e in valid).most_common(1)[0][0]
    templates = [e for e in valid if e.key == key]
    return [templates[i % len(templates)] for i in range(count)]


def _reissue(template: SimEvent, n: int, at: datetime) -> SimEvent:
    body = orjson.loads(template.payload)
    body["event_id"] = hashlib.blake2b(f"hot-{n}".encode(), digest_size=16).hexdigest()
    body["occurred_at"] = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return template._replace(
        payload=orjson.dumps(body), event_id=body["event_id"], occurred_at=at,
        delivered_at=at, tag="hot",
    )  # fmt: skip


def schedule(size: Size, seed: int) -> tuple[list[SimEvent], list[float]]:
    """Base traffic, then the spike with the hot customer's copies interleaved, then base."""
    rates = [(size.base_rate, size.before), (size.base_rate * SPIKE, size.spike)]
    due = phases([*rates, (size.base_rate, size.after)])
    n_before = round(size.base_rate * size.before)
    n_spike = round(size.base_rate * SPIKE * size.spike)
    config = SimulationConfig(
        seed=seed, start=datetime.now(UTC) - timedelta(hours=2), customers=size.customers,
        max_events=len(due) - n_spike // 2, malformed_fraction=0.01, duplicate_fraction=0.02,
    )  # fmt: skip
    base = list(simulate(config))[: config.max_events]  # it may overshoot by a few
    hot = hot_events(base, n_spike // 2)
    events = base[:n_before]
    for n, template in enumerate(hot):
        neighbour = base[n_before + n]
        events += [neighbour, _reissue(template, n, neighbour.occurred_at)]
    events += base[n_before + len(hot) :]
    due = due[: len(events)]  # the simulator may stop a few short of its budget
    return events, due


@dataclass
class Samples:
    max_backlog: int = 0
    max_backlog_at: float = 0.0
    samples: int = 0
    peak_rss_kib: int = 0


def sampler(
    producer: ScheduledProducer, backlog: Backlog, workers: list[Process], samples: Samples
) -> Sampler:
    """Every second: each worker's VmRSS and the end-to-end backlog."""

    def sample() -> None:
        rss = [rss_kib(w.popen.pid) for w in workers if w.popen is not None]
        samples.peak_rss_kib = max([samples.peak_rss_kib, *rss])
        now, samples.samples = backlog(), samples.samples + 1
        if now > samples.max_backlog:
            samples.max_backlog = now
            samples.max_backlog_at = round(time.monotonic() - producer.started_at, 1)

    return Sampler(sample, interval=1.0)


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    settings = env.settings(partitions=size.partitions)
    events, due = schedule(size, seed=8)
    workers = [
        env.start_worker(settings, i, worker_web_port=free_port()) for i in range(size.workers)
    ]
    rss_before = max(rss_kib(w.popen.pid) for w in workers if w.popen is not None)
    client = clickhouse(settings)
    producer, samples = ScheduledProducer(settings, events, due), Samples()
    watch = sampler(producer, Backlog(clickhouse(settings), producer), workers, samples)
    producer.start()
    watch.start()
    try:
        producer.finish(due[-1] + 120)
        drain = wait_drained(client, events, size.drain_timeout)
    finally:
        watch.stop()
    delivery = check_delivery(client, events)
    figures = spike_figures(size, events, producer, samples) | delivery.figures()
    figures |= {
        "sample errors": len(watch.failures),
        "drain after last produce (s)": round(drain, 1),
        "worker RSS before (MiB)": round(rss_before / 1024),
        "peak worker RSS (MiB)": round(samples.peak_rss_kib / 1024),
    }  # fmt: skip
    problems = delivery.problems() + check_metrics(client, settings, events)
    return FaultResult("spike", figures, problems)


def spike_figures(
    size: Size, events: list[SimEvent], producer: ScheduledProducer, samples: Samples
) -> dict[str, Figure]:
    hot = [i for i, e in enumerate(events) if e.tag == "hot"]
    hot_partitions = {md[0] for i in hot if (md := producer.metadata[i]) is not None}
    return {
        "events": len(events), "hot customer events": len(hot),
        "hot share of spike": f"{len(hot) / max(1, round(size.base_rate * SPIKE * size.spike)):.0%}",
        "hot partitions": len(hot_partitions),
        "rates (/s)": f"{size.base_rate:.0f} {size.before:.0f}s, {size.base_rate * SPIKE:.0f} "
        f"{size.spike:.0f}s, {size.base_rate:.0f} {size.after:.0f}s",
        "workers": size.workers, "partitions": size.partitions,
        "produce (s)": round(producer.finished_at - producer.started_at, 1),
        "max backlog (msgs acked, not in ClickHouse)": samples.max_backlog,
        "max backlog at (s after start)": samples.max_backlog_at, "samples": samples.samples,
    }  # fmt: skip


FAULT = Fault(8, "spike", "10x spike, half of it from one hot customer (one key)", run)
