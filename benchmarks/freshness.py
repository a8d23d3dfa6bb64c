"""Benchmark ``freshness``: with one worker running, produce simulated events at a steady
rate (a paced kafka-python producer) for S seconds per rate, wait until ClickHouse holds
them all, then compute in SQL the seconds from produce (the Kafka message timestamp, stored
as ``touchpoints.produced_at``) to visible (``ingested_at``, set by ClickHouse at insert):
p50, p95, p99 and max. Each run uses a fresh broker and ClickHouse."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import CHILDREN, Figures, Workload, make_events, poll_until
from benchmarks.drain import Stack, fresh_stack
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.testing.stack import prepare, worker_process, worker_ready

LAG_SQL = """
SELECT quantilesExact(0.5, 0.95, 0.99)(lag), max(lag), count()
FROM (
    SELECT (toUnixTimestamp64Milli(ingested_at) - toUnixTimestamp64Milli(produced_at)) / 1000
        AS lag
    FROM touchpoints
    WHERE produced_at >= fromUnixTimestamp64Milli(toInt64({start}))
      AND produced_at <= fromUnixTimestamp64Milli(toInt64({end}))
)
"""
COUNT_SQL = """
SELECT uniqExact(event_id) FROM touchpoints
WHERE produced_at >= fromUnixTimestamp64Milli(toInt64({start}))
  AND produced_at <= fromUnixTimestamp64Milli(toInt64({end}))
"""
Say = Callable[[str], None]


def paced_produce(stack: Stack, topic: str, workload: Workload, rate: float) -> tuple[int, int]:
    """Send every event at ``rate`` per second; returns the (start, end) in epoch ms."""
    producer = make_producer(KafkaConfig(bootstrap=stack.broker.bootstrap), client_id="paced")
    try:
        start = time.time()
        for i, event in enumerate(workload.events):
            if i % 50 == 0:
                ahead = start + i / rate - time.time()
                if ahead > 0:
                    time.sleep(ahead)
            producer.send(topic, key=event.key, value=event.payload)
        producer.flush()
        end = time.time()
    finally:
        producer.close()
    return int(start * 1000) - 1, int(end * 1000) + 1


def _wait_stored(client: Any, start: int, end: int, expected: int, what: str) -> None:
    sql = COUNT_SQL.format(start=start, end=end)
    poll_until(lambda: client.query(sql).result_rows[0][0] >= expected, 300, what, interval=0.5)


def _one_run(stack: Stack, workloads: dict[int, Workload], figs: Figures, say: Say) -> None:
    settings = stack.settings()
    prepare(settings)
    worker = CHILDREN.add(worker_process(settings)).start()
    try:
        poll_until(lambda: worker_ready(worker), 120, "worker ready")
        client = stack.client(settings.clickhouse_database)
        # warm-up: group joins and first inserts happen before the measured rates
        warmup = make_events(300, seed=1)
        start, end = paced_produce(stack, settings.raw_topic, warmup, 300)
        _wait_stored(client, start, end, len(warmup.valid_ids), "freshness warm-up")
        for rate, workload in workloads.items():
            start, end = paced_produce(stack, settings.raw_topic, workload, rate)
            achieved = len(workload.events) / ((end - start) / 1000)
            _wait_stored(client, start, end, len(workload.valid_ids), f"drain at {rate}/s")
            ((p, worst, rows),) = client.query(LAG_SQL.format(start=start, end=end)).result_rows
            for label, value in zip(("p50", "p95", "p99"), p, strict=True):
                figs(f"{rate}/s lag {label}", "s").add(float(value))
            figs(f"{rate}/s lag max", "s").add(float(worst))
            figs(f"{rate}/s achieved produce rate", "events/s").add(achieved)
            say(f"{rate}/s: p50 {p[0]:.2f}s p99 {p[2]:.2f}s ({rows} rows, at {achieved:.0f}/s)")
    finally:
        CHILDREN.stop(worker)


def freshness(rates: list[int], seconds: float, runs: int, say: Say) -> Figures:
    figs = Figures("freshness")
    workloads = {rate: make_events(int(rate * seconds), seed=rate) for rate in rates}
    for run in range(runs):
        say(f"freshness run {run + 1}")
        with fresh_stack() as stack:
            _one_run(stack, workloads, figs, say)
    return figs
