"""Baseline (b) of the drain benchmark: a plain aiokafka batch loop, no faust, no dedup.

``getmany`` up to 10,000 records, validate each with pydantic
(:func:`pipeline.validate.validate_message`), insert ``touchpoints`` (and ``dead_letters``)
through the ClickHouse HTTP interface with clickhouse-connect in blocks of up to 10,000
rows, and commit the offsets after each insert. Runs until stopped::

    python -m benchmarks.plain_loop --bootstrap H:P --topic T --group G --url U --database D
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.rows import DEAD_LETTER_COLUMNS, TOUCHPOINT_COLUMNS, dead_letter_row, touchpoint_row
from pipeline.settings import load_settings
from pipeline.validate import validate_message
from pipeline.worker_context import validation_config
from schemas.records import SourceRef, Touchpoint

BLOCK = 10_000


async def run(args: argparse.Namespace) -> None:
    client = connect(ClickHouseConfig(url=args.url, database=args.database), compress=False)
    cfg = validation_config(load_settings())  # the worker's own (placeholders, PII key)
    consumer = AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group,
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=BLOCK,
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
        session_timeout_ms=10_000, rebalance_timeout_ms=3_000, heartbeat_interval_ms=1000,
    )  # fmt: skip
    await consumer.start()
    print("PLAIN-READY", flush=True)
    rows: list[list[Any]] = []
    dead: list[list[Any]] = []
    offsets: dict[TopicPartition, int] = {}
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=BLOCK)
            now = datetime.now(UTC)
            for tp, records in batch.items():
                for r in records:
                    stamp = datetime.fromtimestamp(r.timestamp / 1000, UTC)
                    src = SourceRef(topic=r.topic, partition=r.partition, offset=r.offset,
                                    timestamp=stamp)  # fmt: skip
                    out = validate_message(r.value or b"", src, now, cfg)
                    if isinstance(out, Touchpoint):
                        rows.append(touchpoint_row(out))
                    else:
                        dead.append(dead_letter_row(out))
                offsets[tp] = records[-1].offset + 1
            if offsets and (len(rows) + len(dead) >= BLOCK or not batch):
                if rows:
                    client.insert("touchpoints", rows, column_names=list(TOUCHPOINT_COLUMNS))
                if dead:
                    client.insert("dead_letters", dead, column_names=list(DEAD_LETTER_COLUMNS))
                await consumer.commit(offsets)
                rows, dead, offsets = [], [], {}
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("bootstrap", "topic", "group", "url", "database"):
        parser.add_argument(f"--{name}", required=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
