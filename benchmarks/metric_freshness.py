"""Benchmark ``metric-freshness``: seconds from an event's arrival to the first
``stage_metrics`` row of its window that counts it.

With one worker running and simulated events produced at a steady rate, a *probe* is sent
every second: a web ``page_view`` occurring now, from a new identified customer whose
segment is unique to the probe (``probe-<n>``). The probe's customer enters awareness, so
its window gets a row in the probe's own segment bucket, written only once the metrics
stage has counted it: freshness = that row's ``written_at`` (set by ClickHouse at insert)
minus the probe's produce time. Baseline in the same run: the touchpoint freshness of the
probes themselves (``ingested_at - produced_at`` in ``touchpoints``)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import orjson

from benchmarks.common import CHILDREN, Figures, make_events, poll_until
from benchmarks.drain import Stack, fresh_stack
from benchmarks.freshness import Say
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.testing.stack import prepare, worker_process, worker_ready

ROWS_SQL = """
SELECT segment, toUnixTimestamp64Milli(min(written_at))
FROM stage_metrics WHERE startsWith(segment, {prefix:String}) GROUP BY segment
"""
TOUCH_SQL = """
SELECT event_id, toUnixTimestamp64Milli(ingested_at) FROM touchpoints
WHERE event_id IN {ids:Array(String)}
"""


def _probe(n: int, tag: str) -> tuple[str, bytes]:
    event_id = f"probe-{tag}-{n}"
    body = {
        "event_id": event_id, "occurred_at": datetime.now(UTC).isoformat(), "channel": "web",
        "event_type": "page_view", "identifiers": {"user_id": event_id},
        "properties": {"url": "/probe", "segment": f"probe-{tag}-{n}"}, "schema_version": 1,
    }  # fmt: skip
    return event_id, orjson.dumps(body)


def _run(stack: Stack, rate: int, seconds: float, figs: Figures, say: Say) -> None:
    settings = stack.settings()
    prepare(settings)
    worker = CHILDREN.add(worker_process(settings)).start()
    try:
        poll_until(lambda: worker_ready(worker), 120, "worker ready")
        client = stack.client(settings.clickhouse_database)
        sent = _produce(stack, settings.raw_topic, rate, seconds)
        tag = next(iter(sent)).split("-")[1]
        want = len(sent)

        written: dict[str, int] = {}

        def rows() -> bool:
            got = client.query(ROWS_SQL, parameters={"prefix": f"probe-{tag}-"}).result_rows
            written.update(dict(got))
            return len(written) >= want

        poll_until(rows, 300, "every probe's window row")
        touched = dict(client.query(TOUCH_SQL, parameters={"ids": list(sent)}).result_rows)
        window = sorted((written[i] - t) / 1000 for i, t in sent.items())
        stored = sorted((touched[i] - t) / 1000 for i, t in sent.items() if i in touched)
        for label, q in (("p50", 0.5), ("p95", 0.95)):
            figs(f"{rate}/s event -> window row {label}", "s").add(window[int(q * (len(window) - 1))])
            figs(f"{rate}/s event -> touchpoint row {label} (baseline)", "s").add(
                stored[int(q * (len(stored) - 1))]
            )
        say(f"{rate}/s: window row p50 {window[len(window) // 2]:.2f}s, max {window[-1]:.2f}s")
    finally:
        CHILDREN.stop(worker)


def _produce(stack: Stack, topic: str, rate: int, seconds: float) -> dict[str, int]:
    """Background events at ``rate``/s with a probe each second; the probes' send times."""
    background = make_events(int(rate * seconds), seed=rate).events
    producer = make_producer(KafkaConfig(bootstrap=stack.broker.bootstrap), client_id="probes")
    tag, sent = uuid.uuid4().hex[:8], {}
    start, probes = time.time(), 0
    try:
        for i, event in enumerate(background):
            now = time.time()
            if now - start >= probes:
                event_id, body = _probe(probes, tag)
                producer.send(topic, key=event_id.encode(), value=body)
                sent[event_id] = int(now * 1000)
                probes += 1
            if i % 20 == 0 and (ahead := start + i / rate - time.time()) > 0:
                time.sleep(ahead)
            producer.send(topic, key=event.key, value=event.payload)
        producer.flush()
    finally:
        producer.close()
    return sent


def metric_freshness(rate: int, seconds: float, runs: int, say: Say) -> Figures:
    figs = Figures("metric-freshness")
    for run in range(runs):
        say(f"metric freshness run {run + 1} at {rate}/s")
        with fresh_stack() as stack:
            _run(stack, rate, seconds, figs, say)
    return figs

