"""Benchmark ``memory``: the worker's resident memory as it comes to hold N distinct customers.

The simulated day gives about one customer per four events, so a million customers would
take over four million events; this benchmark instead pre-loads one event per customer
(a web ``page_view`` from a new cookie, every other one also carrying a new email, so the
identity graph links half of them), on a fresh broker and ClickHouse per run. One worker
drains it; whenever ``touchpoints`` has passed the next target (each event is its own
customer, so rows are customers; the distinct count is checked at the end) the worker's
RSS is read. Figures: RSS at each target, the bytes per customer between the first and the
last target (what a customer costs once the fixed part is paid), and the same events
counted by a bare faust agent (:mod:`benchmarks.bare_faust`) on the same broker in the same
run, as the baseline the RSS is divided by.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial

from clickhouse_connect.driver.client import Client

from benchmarks.common import CHILDREN, Figures, Workload, poll_until, rss_kib
from benchmarks.drain import Stack, fresh_stack, produce, run_bare_faust
from pipeline.producers.sim_models import SimEvent
from pipeline.testing.kafka import create_topics, unique_name
from pipeline.testing.stack import prepare, worker_process, worker_ready

PARTITIONS = 6
Say = Callable[[str], None]


def one_event_each(customers: int, seed: int = 11) -> Workload:
    """``customers`` events, each from a customer never seen before, over the last 2 hours."""
    start = datetime.now(UTC) - timedelta(hours=2, minutes=5)
    events = []
    for i in range(customers):
        cookie = str(uuid.UUID(int=(seed << 96) + i))
        ids = {"anonymous_id": cookie}
        if i % 2:
            ids["email"] = f"mem{seed}.{i}@example.com"
        event_id = uuid.UUID(int=(seed << 100) + i).hex
        at = start + timedelta(seconds=7200 * i / customers)
        payload = {
            "event_id": event_id, "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "channel": "web", "event_type": "page_view", "identifiers": ids,
            "properties": {"url": f"/p/{i % 97}"}, "schema_version": 1, "source": "web-sdk",
        }  # fmt: skip
        events.append(SimEvent(
            payload=json.dumps(payload).encode(), key=cookie.encode(), event_id=event_id,
            truth_customer=i, malformed=None, malformed_kind=None, duplicate=False,
            occurred_at=at, delivered_at=at, channel="web", event_type="page_view", tag="",
        ))  # fmt: skip
    return Workload(events)


def _reached(client: Client, rows: int) -> bool:
    sql = "SELECT count() FROM touchpoints"
    return int(client.query(sql).result_rows[0][0]) >= rows


def run_worker(stack: Stack, raw: str, targets: list[int], say: Say) -> dict[int, int]:
    """RSS (KiB) of one worker when ``touchpoints`` first holds each target's rows."""
    settings = stack.settings(raw_topic=raw)
    prepare(settings)
    proc = CHILDREN.add(worker_process(settings, 0)).start()
    got: dict[int, int] = {}
    try:
        poll_until(lambda: worker_ready(proc), 120, "worker ready")
        pid = proc.popen.pid  # started above, so popen is set
        client = stack.client(settings.clickhouse_database)
        for target in targets:
            poll_until(partial(_reached, client, target), max(600.0, target / 200),
                       f"{target} customers stored", interval=1.0)  # fmt: skip
            got[target] = rss_kib(pid) or 0
            say(f"memory: {target} customers, worker RSS {got[target] / 1024:.0f} MiB")
        sql = "SELECT uniqExact(customer_id) FROM touchpoints"
        distinct = client.query(sql).result_rows[0][0]
        if distinct < targets[-1]:
            raise AssertionError(f"memory: {distinct} distinct customers, expected {targets[-1]}")
        return got
    finally:
        CHILDREN.stop(proc)


def memory(targets: list[int], runs: int, say: Say) -> Figures:
    figs = Figures("memory")
    targets = sorted(targets)
    workload = one_event_each(targets[-1])
    for run in range(runs):
        with fresh_stack() as stack:
            raw = unique_name("raw")
            create_topics(stack.broker.bootstrap, [raw], PARTITIONS)
            produce(stack, raw, workload)
            say(f"memory run {run + 1}: {len(workload.events)} one-event customers produced")
            bare = run_bare_faust(stack, raw, workload).rss_kib
            got = run_worker(stack, raw, targets, say)
        for target in targets:
            fig = figs(f"worker RSS at {target:,} customers", "MiB")
            fig.add(got[target] / 1024)
            fig.ratio("bare-faust", got[target] / max(1, bare))
        figs("bare faust RSS (same events counted)", "MiB").add(bare / 1024)
        if len(targets) > 1:
            slope = (got[targets[-1]] - got[targets[0]]) * 1024 / (targets[-1] - targets[0])
            figs("worker RSS per customer (first to last target)", "bytes").add(slope)
    return figs
