"""The raw-topic consumer: batches straight from aiokafka, committed by hand.

The public topic carries one event per message, and faust's per-message path (about
10,000 messages/s per process here) would be the pipeline's ceiling. So the first stage
reads ``touchpoints.raw`` with a plain aiokafka consumer in the faust worker: ``getmany``
a batch, hand it to the ingest handler (validate, dedup, send batch messages to the
internal topics and wait for their delivery), and only then commit the batch's offsets.
Internal topics carry batches, so faust's per-message cost there is paid per batch.

A crash between delivery and commit replays the batch: at-least-once, and the event_id
dedup and ClickHouse's ReplacingMergeTree absorb the repeats. So does a rebalance that
lands while a batch is being handled: only the partitions still owned are committed, and a
refused commit is logged, never fatal: the partitions' owners read on from the last
committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord

from pipeline.ingest import RawMessage
from pipeline.kafka_config import KafkaConfig
from pipeline.metrics import PipelineMetrics

log = logging.getLogger("touchpoint.ingest")

Handler = Callable[[Sequence[RawMessage]], Awaitable[None]]


@dataclass(frozen=True)
class RawConsumerConfig:
    topic: str
    group_id: str
    batch_max_events: int
    batch_max_seconds: float
    session_timeout: float
    rebalance_timeout: float
    max_event_bytes: int


def _message(record: ConsumerRecord[bytes, bytes]) -> RawMessage:
    return RawMessage(record.topic, record.partition, record.offset, record.value, record.timestamp)


class RawConsumer:
    """Consume, process, commit: one batch at a time, forever."""

    def __init__(
        self, cfg: RawConsumerConfig, kafka: KafkaConfig, metrics: PipelineMetrics
    ) -> None:
        self.cfg = cfg
        self.kafka = kafka
        self.metrics = metrics
        self.consumer: AIOKafkaConsumer | None = None

    def _make_consumer(self) -> AIOKafkaConsumer:
        """aiokafka clients must be created inside the running event loop."""
        cfg = self.cfg
        return AIOKafkaConsumer(
            cfg.topic,
            group_id=cfg.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=cfg.batch_max_events,
            max_partition_fetch_bytes=max(2 * cfg.max_event_bytes, 4 * 1024 * 1024),
            fetch_max_bytes=64 * 1024 * 1024,
            session_timeout_ms=int(cfg.session_timeout * 1000),
            rebalance_timeout_ms=int(cfg.rebalance_timeout * 1000),
            heartbeat_interval_ms=1000,
            **self.kafka.aiokafka(),
        )

    async def run(self, handle: Handler) -> None:
        consumer = self.consumer = self._make_consumer()
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(
                    timeout_ms=int(self.cfg.batch_max_seconds * 1000),
                    max_records=self.cfg.batch_max_events,
                )
                if batch:
                    await self._process(consumer, batch, handle)
        finally:
            await asyncio.shield(consumer.stop())

    async def _process(
        self,
        consumer: AIOKafkaConsumer,
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
        handle: Handler,
    ) -> None:
        messages = [_message(r) for records in batch.values() for r in records]
        await handle(messages)
        await self._commit(consumer, {tp: rs[-1].offset + 1 for tp, rs in batch.items()})
        owned = consumer.assignment()  # a rebalance during the batch may have moved some
        for tp, records in batch.items():
            if tp not in owned:
                continue
            high = consumer.highwater(tp)
            if high is not None:
                lag = max(0, high - records[-1].offset - 1)
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit what this consumer still owns. A partition revoked while its batch was being
        handled is not committed here: its new owner replays the batch from the last commit
        (at-least-once; the event_id dedup and ReplacingMergeTree absorb the repeat)."""
        owned = consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if len(mine) < len(offsets):
            log.warning("rebalanced during a batch: %d partitions left uncommitted (replayed by "
                        "their new owner)", len(offsets) - len(mine))  # fmt: skip
        if not mine:
            return
        try:
            await consumer.commit(mine)
        except (CommitFailedError, IllegalStateError) as exc:  # the group moved on meanwhile
            log.warning("commit refused after a rebalance (%s): the batch is replayed", exc)
