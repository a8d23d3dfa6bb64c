"""Kafka offsets for the sink faults: committed group offsets, end offsets, lag, and which
touchpoints an internal-topic offset range carries.

Tansu's ListOffsets "latest" answers one past the *base* offset of the last record batch
(see :mod:`pipeline.testing.kafka`), so :func:`end_offsets` and the lag built on it are
lower bounds: short by at most one producer batch per partition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from pipeline.kafka_config import KafkaConfig
from pipeline.settings import Settings
from pipeline.testing.kafka import read_topic
from schemas.records import TouchpointBatch

Offsets = dict[int, int]
"""Partition -> offset."""


def ingest_group(settings: Settings) -> str:
    """The raw consumer's group (see :func:`pipeline.worker_context.raw_consumer_config`)."""
    return f"{settings.app_id}-ingest"


def committed_offsets(settings: Settings, group: str, topic: str) -> Offsets:
    """The group's committed offsets on ``topic`` (partitions without one are left out)."""
    admin = KafkaAdminClient(
        **KafkaConfig.from_settings(settings).kafka_python(), client_id="fault-offsets"
    )
    try:
        got = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in got.items()
        if tp.topic == topic and meta.offset >= 0
    }


def end_offsets(settings: Settings, topic: str, partitions: int) -> Offsets:
    consumer = KafkaConsumer(
        **KafkaConfig.from_settings(settings).kafka_python(),
        client_id="fault-offsets",
        group_id=None,
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: int(o) for tp, o in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def lag(ends: Mapping[int, int], committed: Mapping[int, int]) -> int:
    """Records between each partition's committed offset and its end, summed."""
    return sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())


@dataclass(frozen=True)
class OffsetRange:
    partition: int
    first: int
    last: int


_RANGE = re.compile(r"(\d+):(\d+)-(\d+)")


def token_ranges(token: str) -> tuple[str, list[OffsetRange]]:
    """``topic|p:first-last,...`` (:func:`pipeline.sink.dedup_token`) -> topic and ranges."""
    topic, _, parts = token.partition("|")
    return topic, [OffsetRange(int(p), int(a), int(b)) for p, a, b in _RANGE.findall(parts)]


def touchpoint_ids(settings: Settings, topic: str, ranges: Iterable[OffsetRange]) -> set[str]:
    """Event ids carried by the ``<prefix>.journeyed`` messages inside ``ranges``."""
    wanted = list(ranges)
    ids: set[str] = set()
    for record in read_topic(KafkaConfig.from_settings(settings), topic, timeout=60, idle=2.0):
        if any(
            r.partition == record.partition and r.first <= record.offset <= r.last for r in wanted
        ):
            batch = TouchpointBatch.model_validate_json(record.value)
            ids.update(tp.event_id for tp in batch.records)
    return ids


def messages_below(settings: Settings, topic: str, committed: Mapping[int, int]) -> list[bytes]:
    """Values of the ``topic`` messages below each partition's ``committed`` offset."""
    return [
        record.value
        for record in read_topic(KafkaConfig.from_settings(settings), topic, timeout=60, idle=2.0)
        if record.offset < committed.get(record.partition, 0)
    ]
