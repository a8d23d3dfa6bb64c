"""Stage 3, sink: batched ClickHouse inserts that retry until they succeed.

An insert carries an explicit ``insert_deduplication_token`` built from the Kafka offsets
it holds, so a retried or replayed batch is stored once. The caller acknowledges the
messages only after :meth:`ClickHouseSink.write` returns, so no offset is committed past
the last successful insert; while ClickHouse is down the call keeps retrying with backoff,
the stream stops pulling, and consumption pauses by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from pipeline import failpoints
from pipeline.chclient import error_code, translate
from pipeline.metrics import PipelineMetrics
from pipeline.sink_interrupt import half_sent_insert

log = logging.getLogger("touchpoint.sink")


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 0.2
    max_delay: float = 30.0
    factor: float = 2.0

    def delays(self) -> Iterable[float]:
        delay = self.first_delay
        while True:
            yield delay
            delay = min(self.max_delay, delay * self.factor)


def dedup_token(topic: str, ranges: OffsetRanges) -> str:
    """Token naming exactly the messages an insert holds: ``topic|p:first-last@t1-t2,...``,
    offsets and the Kafka timestamps (ms) of the first and last message of each partition.

    Offsets alone are not enough: a broker that lost its data (the memory-only embedded one
    after a restart) numbers new messages from 0 again, and their inserts would carry the
    tokens of old ones and be dropped by ClickHouse as duplicates. A replay of the same
    messages has the same timestamps, so it is still recognised."""
    parts = ",".join(
        f"{p}:{a}-{b}@{ranges.stamps.get(p, (0, 0))[0]}-{ranges.stamps.get(p, (0, 0))[1]}"
        for p, (a, b) in sorted(ranges.ranges.items())
    )
    return f"{topic}|{parts}"


class OffsetRanges:
    """First and last offset per partition of the messages in one batch, and their
    timestamps."""

    def __init__(self) -> None:
        self.ranges: dict[int, tuple[int, int]] = {}
        self.stamps: dict[int, tuple[int, int]] = {}
        """Partition -> Kafka timestamps (ms) of its first and last message."""

    def add(self, partition: int, offset: int, timestamp: float | None = None) -> None:
        """One message; ``timestamp`` in seconds, as faust gives it."""
        ms = round(timestamp * 1000) if timestamp is not None else 0
        first, last = self.ranges.get(partition, (offset, offset))
        t_first, t_last = self.stamps.get(partition, (ms, ms))
        if offset <= first:
            first, t_first = offset, ms
        if offset >= last:
            last, t_last = offset, ms
        self.ranges[partition] = (first, last)
        self.stamps[partition] = (t_first, t_last)


class ClickHouseSink:
    """Inserts rows into one table; retries transient and persistent failures alike."""

    def __init__(
        self,
        client_factory: Callable[[], Client],
        table: str,
        columns: Sequence[str],
        metrics: PipelineMetrics,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self._factory = client_factory
        self._client: Client | None = None
        self._types: Sequence[Any] | None = None
        """The columns' ClickHouse types, read once (a DESCRIBE) and reused by every insert;
        forgotten after a failure, so a migrated table is described again."""
        self.table = table
        self.columns = list(columns)
        self.metrics = metrics
        self.retry = retry
        self.healthy = True
        self.last_error: str = ""

    def _insert(self, rows: list[list[Any]], token: str) -> None:
        if self._client is None:
            self._client = self._factory()
        client = self._client
        if self._types is None:
            self._types = client.create_insert_context(self.table, self.columns).column_types
        self._failpoint(  # die with this very insert half sent
            "sink.during_insert",
            token,
            lambda: half_sent_insert(client, self.table, self.columns, rows, token),
        )
        client.insert(
            self.table,
            rows,
            column_names=self.columns,
            column_types=self._types,
            settings={"insert_deduplication_token": token},
        )

    async def write(self, rows: list[list[Any]], token: str) -> None:
        """Insert ``rows`` once; returns only when ClickHouse has them."""
        if not rows:
            return
        for delay in self.retry.delays():
            started = time.perf_counter()
            self._failpoint("sink.before_insert", token)
            try:
                await asyncio.to_thread(self._insert, rows, token)
            except Exception as exc:  # any failure: retry; giving up would lose the batch
                self._on_failure(exc, delay)
                await asyncio.sleep(delay)
                continue
            self._on_success(len(rows), time.perf_counter() - started)
            self._failpoint("sink.after_insert", token)  # stored, not yet acked
            return

    def _failpoint(self, name: str, token: str, then: Callable[[], None] | None = None) -> None:
        """The fault suite's failpoint ``name`` keyed by table; when it fires, the batch's
        token is logged first (the suite reads which offsets the crash hit) and ``then`` run."""

        def announce() -> None:
            log.warning("sink %s: failpoint %s at batch %s", self.table, name, token)
            if then is not None:
                then()

        failpoints.hit(name, self.table, prelude=announce)

    def _on_success(self, count: int, seconds: float) -> None:
        m = self.metrics
        m.sink_batch_seconds.labels(self.table).observe(seconds)
        m.sink_batch_rows.labels(self.table).observe(count)
        m.rows_written.labels(self.table).inc(count)
        if not self.healthy:
            log.warning("sink %s: ClickHouse insert succeeded again", self.table)
        self.healthy = True
        self.last_error = ""
        m.sink_retrying.labels(self.table).set(0)

    def _on_failure(self, exc: BaseException, delay: float) -> None:
        self._client = None  # reconnect on the next try
        self._types = None  # and describe the table again: a migration may have changed it
        error = translate(exc, stage=f"sink {self.table}") if isinstance(exc, DriverError) else exc
        code = error_code(exc)
        self.metrics.insert_errors.labels(self.table, str(code or "none")).inc()
        self.metrics.sink_retrying.labels(self.table).set(1)
        self.healthy = False
        self.last_error = str(error)
        log.error("%s; retrying in %.1fs, consumption paused meanwhile", error, delay)
