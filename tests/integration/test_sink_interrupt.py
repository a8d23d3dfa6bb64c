"""The sink.during_insert failpoint: a process dies with an insert half sent; ClickHouse
stores nothing of it, and the retry under the same dedup token stores the whole batch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.sink_interrupt import json_lines
from pipeline.testing.kafka import unique_name

pytestmark = pytest.mark.integration

COLUMNS = ["id", "at", "tags", "attrs", "amount"]
DDL = """CREATE TABLE {t} (id String, at DateTime64(3, 'UTC'), tags Array(String),
attrs Map(LowCardinality(String), String), amount Nullable(Float64))
ENGINE = ReplacingMergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 100"""

CHILD = """
import asyncio, sys
from datetime import UTC, datetime
from pipeline import failpoints
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.metrics import PipelineMetrics
from pipeline.sink import ClickHouseSink
url, db, table, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
failpoints.configure("sink.during_insert=exit~" + table)
cfg = ClickHouseConfig(url=url, database=db)
sink = ClickHouseSink(lambda: connect(cfg, compress=False), table, {columns!r},
                      PipelineMetrics.create())
rows = [[f"e{{i}}", datetime(2026, 1, 1, tzinfo=UTC), ["a"], {{"k": "v"}}, 1.5]
        for i in range(n)]
asyncio.run(sink.write(rows, "tok-1"))
print("insert returned: the failpoint did not fire")
"""


def _rows(n: int) -> list[list[Any]]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return [[f"e{i}", at, ["a"], {"k": "v"}, 1.5] for i in range(n)]


def _count(client: Any, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


def test_half_sent_insert_stores_nothing_and_the_retry_stores_all(clickhouse_url: str) -> None:
    db = "".join(c if c.isalnum() else "_" for c in unique_name("halfins"))
    admin = connect(ClickHouseConfig(url=clickhouse_url), database="")
    admin.command(f"CREATE DATABASE {db}")
    client = connect(ClickHouseConfig(url=clickhouse_url, database=db))
    for table in ("t", "control"):
        client.command(DDL.format(t=table))
    # control: the half body the failpoint sends is a valid insert on its own
    settings = {"date_time_input_format": "best_effort"}
    client.raw_insert(
        "control", COLUMNS, json_lines(COLUMNS, _rows(1000)[:500]), settings, "JSONEachRow"
    )
    assert _count(client, "control") == 500

    child = textwrap.dedent(CHILD.format(columns=COLUMNS))
    argv = [sys.executable, "-c", child, clickhouse_url, db, "t", "1000"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 137, done.stdout + done.stderr
    assert "failpoint sink.during_insert fires" in done.stderr
    time.sleep(2)  # let the server notice the closed connection
    assert _count(client, "t") == 0

    client.insert("t", _rows(1000), column_names=COLUMNS,
                  settings={"insert_deduplication_token": "tok-1"})  # fmt: skip
    assert _count(client, "t") == 1000
    admin.command(f"DROP DATABASE {db}")
