"""The sink describes its table once and reuses the column types; after a failed insert it
describes it again (a migration may have changed the table)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from pipeline.metrics import PipelineMetrics
from pipeline.sink import ClickHouseSink, RetryPolicy


class Client:
    """Records what the sink asks of clickhouse-connect (no ClickHouse: the caching only)."""

    def __init__(self, log: list[str], fail: list[bool]) -> None:
        self.log, self.fail = log, fail

    def create_insert_context(self, table: str, columns: list[str]) -> Any:
        self.log.append(f"describe {table}")
        return SimpleNamespace(column_types=[f"type of {c}" for c in columns])

    def insert(self, table: str, rows: Any, column_names: Any, column_types: Any, **_: Any) -> None:
        assert column_types == [f"type of {c}" for c in column_names]
        if self.fail and self.fail.pop(0):
            raise ConnectionError("ClickHouse went away")
        self.log.append(f"insert {len(rows)}")


def test_the_table_is_described_once_and_again_after_a_failure() -> None:
    log: list[str] = []
    fail = [False, False, True]  # the third insert fails once, then succeeds
    sink = ClickHouseSink(
        lambda: Client(log, fail), "t", ["id", "n"], PipelineMetrics.create(), RetryPolicy(0.001)
    )
    for token in ("a", "b", "c"):
        asyncio.run(sink.write([["x", 1]], token))
    assert log == ["describe t", "insert 1", "insert 1", "describe t", "insert 1"]
    assert sink.healthy
