"""Benchmarks ``drain`` and ``memory``: how fast the pipeline empties a pre-loaded raw topic,
against two baselines reading the same topic on the same broker in the same run, and the
worker's resident memory afterwards.

Per run: a fresh embedded Tansu and ClickHouse; the simulated events are produced once into
a raw topic; then each system (in an order rotated per run) reads that topic from the start
with its own consumer group and database:

* ``pipeline``: ``faust -A pipeline.app worker`` (1, optionally 2 workers), timed from
  "Worker ready" until ``touchpoints`` holds every valid event id and ``dead_letters``
  every malformed message (distinct ids / offsets);
* ``bare-faust``: :mod:`benchmarks.bare_faust`, from "Worker ready" to its last count;
* ``plain-loop``: :mod:`benchmarks.plain_loop`, from its consumer start until ClickHouse
  holds every event.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from benchmarks.common import CHILDREN, Figures, Workload, poll_until, python_process, rss_kib
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.migrate import migrate
from pipeline.producers.kafka import make_producer
from pipeline.settings import Settings
from pipeline.testing.kafka import EmbeddedTansu, create_topics, free_port, unique_name
from pipeline.testing.stack import (
    EmbeddedClickHouse,
    prepare,
    settings_for_test,
    worker_process,
    worker_ready,
)

PARTITIONS = 6  # the production default of TOUCHPOINT_PARTITIONS


@dataclass
class Stack:
    broker: EmbeddedTansu
    clickhouse: EmbeddedClickHouse
    root: Path

    def settings(self, **over: Any) -> Settings:
        """Production batching and partitions; unique group, topics and database."""
        base: dict[str, Any] = {
            "partitions": PARTITIONS, "sink_max_seconds": 0.5, "batch_max_seconds": 0.2,
        }  # fmt: skip
        return settings_for_test(
            self.broker.bootstrap, self.clickhouse.url, self.root / unique_name("w"),
            **{**base, **over},
        )  # fmt: skip

    def client(self, database: str) -> Client:
        return connect(ClickHouseConfig(url=self.clickhouse.url, database=database))


@contextmanager
def fresh_stack() -> Iterator[Stack]:
    """A throw-away broker and ClickHouse server, stopped (and their data removed) on exit."""
    root = Path(tempfile.mkdtemp(prefix="touchpoint-bench-"))
    broker = CHILDREN.add(EmbeddedTansu())
    clickhouse = None
    try:
        broker.start()
        clickhouse = CHILDREN.add(EmbeddedClickHouse(root / "clickhouse" / "data"))
        clickhouse.start()
        yield Stack(broker, clickhouse, root)
    finally:
        if clickhouse is not None:
            CHILDREN.stop(clickhouse)
        CHILDREN.stop(broker)
        shutil.rmtree(root, ignore_errors=True)


def produce(stack: Stack, topic: str, workload: Workload) -> None:
    producer = make_producer(KafkaConfig(bootstrap=stack.broker.bootstrap), client_id="bench")
    try:
        for event in workload.events:
            producer.send(topic, key=event.key, value=event.payload)
        producer.flush()
    finally:
        producer.close()


def stored(client: Client, valid: int, malformed: int) -> bool:
    """Every valid event id in ``touchpoints`` and every malformed message in
    ``dead_letters`` (a cheap count first, the distinct counts only when it can hold)."""
    sql = "SELECT (SELECT count() FROM touchpoints), (SELECT count() FROM dead_letters)"
    rows, dead = client.query(sql).result_rows[0]
    if rows < valid or dead < malformed:
        return False
    sql = (
        "SELECT (SELECT uniqExact(event_id) FROM touchpoints),"
        " (SELECT uniqExact(src_partition, src_offset) FROM dead_letters)"
    )
    rows, dead = client.query(sql).result_rows[0]
    return bool(rows >= valid and dead >= malformed)


@dataclass
class Drained:
    seconds: float
    rss_kib: int = 0
    customers: int = 0


def _timeout(workload: Workload) -> float:
    return max(300.0, len(workload.events) / 300)


def run_pipeline(stack: Stack, raw: str, workload: Workload, workers: int) -> Drained:
    settings = stack.settings(raw_topic=raw)
    prepare(settings)
    procs = []
    for index in range(workers):
        over = {"worker_web_port": free_port()} if index else {}
        procs.append(CHILDREN.add(worker_process(settings, index, **over)).start())
    try:
        t0 = poll_until(lambda: any(worker_ready(p) for p in procs), 120, "worker ready")
        client = stack.client(settings.clickhouse_database)
        valid, malformed = len(workload.valid_ids), workload.malformed
        t1 = poll_until(lambda: stored(client, valid, malformed), _timeout(workload),
                        "pipeline drain", interval=0.25)  # fmt: skip
        rss = sum(rss_kib(p.popen.pid) or 0 for p in procs if p.popen is not None)
        customers = client.query("SELECT uniqExact(customer_id) FROM touchpoints").result_rows
        return Drained(t1 - t0, rss, int(customers[0][0]))
    finally:
        for p in procs:
            CHILDREN.stop(p)


def run_bare_faust(stack: Stack, raw: str, workload: Workload) -> Drained:
    app_id = unique_name("bare").replace(".", "_")
    env = {
        "BENCH_BOOTSTRAP": stack.broker.bootstrap, "BENCH_TOPIC": raw, "BENCH_APP_ID": app_id,
        "BENCH_TARGET": str(len(workload.events)), "BENCH_WEB_PORT": str(free_port()),
        "BENCH_DATADIR": str(stack.root / app_id),
    }  # fmt: skip
    log = stack.root / f"{app_id}.log"
    args = ("-A", "benchmarks.bare_faust", "worker", "-l", "info")
    proc = CHILDREN.add(python_process("faust", log, env, *args)).start()
    try:
        t0 = poll_until(lambda: _logged(proc, "Worker ready"), 120, "bare faust ready")
        t1 = poll_until(lambda: _logged(proc, "BENCH-DONE"), _timeout(workload), "bare count")
        return Drained(t1 - t0, rss_kib(proc.popen.pid) or 0)
    finally:
        CHILDREN.stop(proc)


def run_plain_loop(stack: Stack, raw: str, workload: Workload) -> Drained:
    database = unique_name("plain").replace(".", "_")
    migrate(stack.client(""), database)
    args = (
        "--bootstrap", stack.broker.bootstrap, "--topic", raw, "--group", database,
        "--url", stack.clickhouse.url, "--database", database,
    )  # fmt: skip
    proc = CHILDREN.add(
        python_process("benchmarks.plain_loop", stack.root / f"{database}.log", {}, *args)
    ).start()
    try:
        t0 = poll_until(lambda: _logged(proc, "PLAIN-READY"), 60, "plain loop ready")
        client = stack.client(database)
        valid, malformed = len(workload.valid_ids), workload.malformed
        t1 = poll_until(lambda: _logged(proc, "") and stored(client, valid, malformed),
                        _timeout(workload), "plain loop drain", interval=0.25)  # fmt: skip
        return Drained(t1 - t0, rss_kib(proc.popen.pid) or 0)
    finally:
        CHILDREN.stop(proc)


def _logged(proc: Any, text: str) -> bool:
    if not proc.alive:
        raise RuntimeError(f"{proc.argv[2:5]} exited: {proc.log_tail()}")
    return text in proc.log_tail(200_000)


def drain(workload: Workload, runs: int, workers: list[int], say: Any) -> list[Figures]:
    """The ``drain`` and ``memory`` figures over ``runs`` fresh stacks."""
    speed, mem = Figures("drain"), Figures("memory")
    n = len(workload.events)
    systems = [f"pipeline-{w}w" for w in workers] + ["bare-faust", "plain-loop"]
    for run in range(runs):
        with fresh_stack() as stack:
            raw = unique_name("raw")
            create_topics(stack.broker.bootstrap, [raw], PARTITIONS)
            started = time.monotonic()
            produce(stack, raw, workload)
            say(f"run {run + 1}: {n} events produced in {time.monotonic() - started:.1f}s")
            order = systems[run % len(systems) :] + systems[: run % len(systems)]
            got: dict[str, Drained] = {}
            for system in order:
                if system == "bare-faust":
                    got[system] = run_bare_faust(stack, raw, workload)
                elif system == "plain-loop":
                    got[system] = run_plain_loop(stack, raw, workload)
                else:
                    got[system] = run_pipeline(stack, raw, workload, int(system[9:-1]))
                say(f"run {run + 1}: {system} drained in {got[system].seconds:.1f}s")
        rate = {k: n / v.seconds for k, v in got.items()}
        for system in order:
            fig = speed(system, "events/s")
            fig.add(rate[system])
            if system.startswith("pipeline"):
                fig.ratio("bare-faust", rate[system] / rate["bare-faust"])
                fig.ratio("plain-loop", rate[system] / rate["plain-loop"])
        for system in systems:
            mem(f"{system} RSS", "MiB").add(got[system].rss_kib / 1024)
        one = got[systems[0]]
        mem("customers (distinct customer_id)", "customers").add(one.customers)
        above = (one.rss_kib - got["bare-faust"].rss_kib) * 1024 / max(1, one.customers)
        mem(f"{systems[0]} RSS above bare faust per customer", "bytes").add(above)
    return [speed, mem]
