"""The data of benchmark ``queries``: a month of touchpoints and every table derived from them,
at ``--query-events`` (default 10 million) touchpoints, in a fresh chDB database.

How: a *base* month of at most 100,000 simulated events (30 days ending now, one customer per
ten events, sessions 12 hours apart on average) goes through the real pipeline (embedded
Tansu, one worker, the ClickHouse server), which writes ``touchpoints``, ``dead_letters``,
the identity tables, ``stage_transitions``, ``journeys`` and ``customers``. Then each of those
tables is copied ``copies - 1`` times in SQL, copy ``n`` with every id suffixed ``~n`` and
every time shifted ``n x 7`` seconds earlier: the copies are other customers living the same
kinds of journeys, so the volume, the customers (~1 M at 10 M events), channels, event types,
identity merges, journeys per customer and the spread over 30 days are those of the
simulator, scaled. Finally ``stage_metrics`` is rebuilt in SQL from all the transitions with
the definitions of ``touchpoint verify metrics`` (:data:`pipeline.verify_metrics.MEASURE_ITEMS`)
plus the roll-ups, since per-minute windows of the copies do not scale by copying (the
worker's own windows of the base month and its ``late_events`` are replaced); ``alerts`` stay
the worker's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from benchmarks.common import CHILDREN, Workload, poll_until
from benchmarks.queries_sql import (
    COPY_TABLES,
    LIVE_TIMES,
    METRICS_REBUILD,
    copy_sql,
    snapshot_sql,
)
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.migrate import migrate
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.stage_model import load_stage_model
from pipeline.testing.kafka import EmbeddedTansu
from pipeline.testing.stack import (
    EmbeddedClickHouse,
    prepare,
    settings_for_test,
    worker_process,
    worker_ready,
)
from pipeline.verify_metrics import model_params

BASE_MAX = 100_000
COPIES_PER_INSERT = 10
MARKER = "dataset.json"
_QUIET = (
    "SELECT (SELECT count() FROM touchpoints), (SELECT count() FROM stage_transitions),"
    " (SELECT count() FROM customers), (SELECT count() FROM journeys),"
    " (SELECT count() FROM identity_overrides)"
)


@dataclass
class Dataset:
    database: str
    touchpoints: int
    copies: int
    base_events: int
    build_seconds: float
    rows: dict[str, int]


def base_events(count: int) -> Workload:
    """About ``count`` simulated messages over the 30 days before now."""
    config = SimulationConfig(
        seed=11, start=datetime.now(UTC) - timedelta(days=30, minutes=5),
        duration=timedelta(days=30), customers=max(50, count // 10), max_events=count,
        mean_session_gap=timedelta(hours=12),
    )  # fmt: skip
    return Workload(list(simulate(config)))


def client_for(clickhouse: EmbeddedClickHouse, database: str) -> Client:
    cfg = ClickHouseConfig(url=clickhouse.url, database=database)
    return connect(cfg, send_receive_timeout=3600, query_limit=0)


def open_dataset(
    root: Path, events: int, say: Callable[[str], None]
) -> tuple[EmbeddedClickHouse, Dataset]:
    """The ClickHouse server over ``root/clickhouse`` holding the data (built unless
    ``root/dataset.json`` says it holds ``events`` touchpoints already)."""
    marker = root / MARKER
    clickhouse = CHILDREN.add(EmbeddedClickHouse(root / "clickhouse" / "data"))
    if marker.exists():
        found = Dataset(**json.loads(marker.read_text()))
        if found.copies == _copies(events, found.base_events):
            clickhouse.start()
            say(f"queries: reusing {found.touchpoints:,} touchpoints in {root}")
            applied = migrate(client_for(clickhouse, ""), found.database)  # as a user upgrades
            if applied:
                say(f"queries: applied {len(applied)} newer migrations to the reused dataset")
            return clickhouse, found
        raise ValueError(f"{root} holds a dataset of {found.touchpoints} events, not {events}")
    started = time.monotonic()
    dataset = _build(root, clickhouse, events, say)
    dataset.build_seconds = round(time.monotonic() - started, 1)
    marker.write_text(json.dumps(asdict(dataset), indent=2))
    return clickhouse, dataset


def _copies(events: int, base: int) -> int:
    return max(1, math.ceil(events / base - 0.5)) if base else 1


def _build(
    root: Path, clickhouse: EmbeddedClickHouse, events: int, say: Callable[[str], None]
) -> Dataset:
    base = min(events, BASE_MAX)
    workload = base_events(base)
    say(f"queries: {len(workload.events):,} simulated events through the pipeline")
    broker = CHILDREN.add(EmbeddedTansu())
    try:
        broker.start()
        clickhouse.start()
        settings = settings_for_test(
            broker.bootstrap, clickhouse.url, root / "worker", partitions=6,
            sink_max_seconds=0.5, batch_max_seconds=0.2,
        )  # fmt: skip
        prepare(settings)
        _run_pipeline(settings, workload)
    finally:
        CHILDREN.stop(broker)
    client = client_for(clickhouse, settings.clickhouse_database)
    stored = int(client.query("SELECT count() FROM touchpoints FINAL").result_rows[0][0])
    copies = _copies(events, stored)
    say(f"queries: the pipeline stored {stored:,} touchpoints; {copies} copies in SQL")
    for statement in LIVE_TIMES:
        client.command(statement)
    replicate(client, copies, say)
    rebuild_metrics(client)
    rows = table_rows(client)
    return Dataset(settings.clickhouse_database, rows["touchpoints"], copies, stored, 0.0, rows)


def _run_pipeline(settings: Any, workload: Workload) -> None:
    worker = CHILDREN.add(worker_process(settings)).start()
    try:
        poll_until(lambda: worker_ready(worker), 120, "worker ready")
        producer = make_producer(KafkaConfig.from_settings(settings), client_id="bench-queries")
        for event in workload.events:
            producer.send(settings.raw_topic, key=event.key, value=event.payload)
        producer.close()
        client = connect(ClickHouseConfig.from_settings(settings))
        valid = len(workload.valid_ids)
        count = "SELECT uniqExact(event_id) FROM touchpoints"
        poll_until(lambda: client.query(count).result_rows[0][0] >= valid,
                   max(600.0, valid / 100), f"{valid} touchpoints", interval=2.0)  # fmt: skip
        seen: list[Any] = []

        def quiet() -> bool:  # nothing written for 10 s: every stage is idle
            seen.append(client.query(_QUIET).result_rows[0])
            return len(seen) >= 5 and len(set(seen[-5:])) == 1

        poll_until(quiet, 600, "the pipeline to go quiet", interval=2.5)
    finally:
        CHILDREN.stop(worker)


def replicate(client: Client, copies: int, say: Callable[[str], None]) -> None:
    """Copies 1 .. copies-1 of every per-customer table, COPIES_PER_INSERT per statement."""
    for table in COPY_TABLES:
        started = time.monotonic()
        for statement in snapshot_sql(table):
            client.command(statement)
        for first in range(1, copies, COPIES_PER_INSERT):
            count = min(COPIES_PER_INSERT, copies - first)
            client.command(copy_sql(table, first, count))
        client.command(f"DROP TABLE base_{table}")
        say(f"queries: {table} copied {copies - 1}x in {time.monotonic() - started:.0f}s")


def rebuild_metrics(client: Client) -> None:
    """``stage_metrics`` from every transition (see the module doc); no ``late_events``."""
    client.command("TRUNCATE TABLE stage_metrics")
    client.command("TRUNCATE TABLE late_events")
    client.command(METRICS_REBUILD, parameters=model_params(load_stage_model()))


def table_rows(client: Client) -> dict[str, int]:
    sql = (
        "SELECT table, sum(rows) FROM system.parts WHERE database = currentDatabase()"
        " AND active GROUP BY table ORDER BY table"
    )
    return {str(t): int(n) for t, n in client.query(sql).result_rows}


def parts(client: Client) -> dict[str, int]:
    """Active parts per table: FINAL reads merge them, so their number weighs on timings."""
    sql = (
        "SELECT table, count() FROM system.parts WHERE database = currentDatabase()"
        " AND active GROUP BY table ORDER BY table"
    )
    return {str(t): int(n) for t, n in client.query(sql).result_rows}
