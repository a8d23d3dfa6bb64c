"""Baseline (a) of the drain benchmark: a bare faust agent that only counts raw messages.

Run as ``python -m faust -A benchmarks.bare_faust worker``; configured by environment:
``BENCH_BOOTSTRAP``, ``BENCH_TOPIC``, ``BENCH_APP_ID``, ``BENCH_TARGET`` (messages to
count), ``BENCH_WEB_PORT``, ``BENCH_DATADIR``. When the count reaches the target it logs
``BENCH-DONE <count>``, which the harness waits for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import faust

log = logging.getLogger("benchmarks.bare_faust")

app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-bare"),
    broker=f"kafka://{os.environ.get('BENCH_BOOTSTRAP', '127.0.0.1:9092')}",
    store="memory://",
    consumer_auto_offset_reset="earliest",
    processing_guarantee="at_least_once",
    broker_commit_interval=1.0,
    web_port=int(os.environ.get("BENCH_WEB_PORT", "6099")),
    web_bind="127.0.0.1",
    web_host="127.0.0.1",
    datadir=os.environ.get("BENCH_DATADIR", "/tmp/bench-bare-faust"),
    broker_rebalance_timeout=3.0,
    broker_heartbeat_interval=1.0,
)
raw = app.topic(
    os.environ.get("BENCH_TOPIC", "touchpoints.raw"), value_serializer="raw", key_serializer="raw"
)
TARGET = int(os.environ.get("BENCH_TARGET", "0"))


@app.agent(raw, name="count")
async def count(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    seen = 0
    async for _value in stream:
        seen += 1
        if seen == TARGET:
            log.warning("BENCH-DONE %d", seen)
            print(f"BENCH-DONE {seen}", flush=True)
        yield None
