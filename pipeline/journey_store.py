"""Journey state durability: per-partition in-memory states and their changelog topic.

A faust Table write per event costs about 300 µs here, so the journey stage keeps its
states in memory per partition (compact at rest: :mod:`pipeline.journey_states`) and
persists them once per batch: one :class:`JourneyChangelog` message per batch and partition
on ``<prefix>.journey-changelog``
(same partition count and numbering as ``<prefix>.valid``), holding the states the batch
changed. The handler writes it after the batch's outputs are delivered and before faust acks
the batch; a worker that gets a partition rebuilds its states by replaying that changelog
partition from the beginning (:meth:`JourneyStore.ensure`, lazily at the partition's first
batch), and drops them when the partition is revoked.

Known limit: the changelog is not compacted yet (it grows with every batch); restoring a
partition reads all of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.journey_stage import PartitionState
from pipeline.journey_states import StateCache
from pipeline.kafka_config import KafkaConfig
from schemas.journey import JourneyChangelog

log = logging.getLogger("touchpoint.journey")


async def read_partition(
    topic: str, partition: int, kafka: KafkaConfig, hot_states: int, poll_ms: int = 200
) -> PartitionState:
    """Replay one changelog partition from the beginning.

    Tansu's ListOffsets ``latest`` is one past the base offset of the last record batch,
    not past its last record, so reading stops only once the position reached that end
    *and* a poll came back empty."""
    part = PartitionState(states=StateCache(hot_states))
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **kafka.aiokafka())
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        count = 0
        while True:
            batch = await consumer.getmany(tp, timeout_ms=poll_ms, max_records=500)
            records = batch.get(tp, [])
            for record in records:
                if record.value:
                    part.apply(JourneyChangelog.model_validate_json(record.value))
                    count += 1
            if not records and await consumer.position(tp) >= end:
                break
    finally:
        await consumer.stop()
    log.info(
        "journey: partition %d restored from %d changelog messages (%d customers)",
        partition, count, len(part.states),
    )  # fmt: skip
    return part


class JourneyStore:
    """The journey states of the partitions this worker owns."""

    def __init__(self, changelog_topic: str, kafka: KafkaConfig, hot_states: int) -> None:
        self.topic, self.kafka, self.hot_states = changelog_topic, kafka, hot_states
        self.partitions: dict[int, PartitionState] = {}
        self._lock = asyncio.Lock()

    async def ensure(self, partition: int) -> PartitionState:
        """The partition's states, rebuilt from the changelog if not held yet."""
        async with self._lock:
            part = self.partitions.get(partition)
            if part is None:
                part = await read_partition(self.topic, partition, self.kafka, self.hot_states)
                self.partitions[partition] = part
            return part

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget revoked partitions: whoever owns them next rebuilds them."""
        for partition in partitions:
            if self.partitions.pop(partition, None) is not None:
                log.info("journey: partition %d revoked, states dropped", partition)
