"""Where an identifier's customer is looked up when an event is stamped.

The resolver (the only writer of the identity graph) publishes a :class:`NodeAssignment`
for every identifier whose customer is not its own fallback id, on a compacted topic keyed
by the identifier. Every worker tails that whole topic with an ``assign()`` reader (no
consumer group, so no rebalances) into an :class:`AssignmentMap`, and the ingest stamps
each event with the customer of its strongest identifier, or that identifier's fallback id
when the resolver has not linked it (yet). Assignments are versioned and idempotent, so
the order of arrival does not matter; an event stamped before its link was resolved is
re-attributed by the ``identity_overrides`` table.

This is the GlobalTable pattern without faust's GlobalTable (open bugs with several
workers): assignments are few (only identifiers that joined another customer), so every
worker can hold all of them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from pipeline.kafka_config import KafkaConfig
from schemas.identity import NodeAssignment, fallback_customer_id

log = logging.getLogger("touchpoint.assignments")
FORGOTTEN = ""
"""The customer id of an assignment that erases an identifier (GDPR forget)."""


@dataclass
class AssignmentMap:
    """node -> (customer id, version), newest version wins; and the shared lines."""

    entries: dict[str, tuple[str, int]] = field(default_factory=dict)
    shared: set[str] = field(default_factory=set)
    """Nodes that stand for no one person (see :func:`pipeline.stamp.stamp`)."""
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, assignment: NodeAssignment) -> None:
        node = assignment.node
        known = self.entries.get(node)
        if known is None or known[1] <= assignment.version:
            self.entries[node] = (assignment.customer_id, assignment.version)
            if assignment.shared:
                self.shared.add(node)
            else:
                self.shared.discard(node)

    def customer_of(self, node: str) -> str:
        """The node's customer: its assignment, else its fallback id."""
        known = self.entries.get(node)
        return known[0] if known is not None else fallback_customer_id(node)

    def is_forgotten(self, node: str) -> bool:
        known = self.entries.get(node)
        return known is not None and known[0] == FORGOTTEN


class AssignmentReader:
    """Tails every partition of the assignments topic from the beginning, forever."""

    def __init__(self, topic: str, kafka: KafkaConfig, target: AssignmentMap) -> None:
        self.topic, self.kafka, self.target = topic, kafka, target

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            enable_auto_commit=False, group_id=None, **self.kafka.aiokafka()
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for record in records:
                        self._apply(record.value)
                if not batch:
                    self.target.caught_up.set()
        finally:
            await asyncio.shield(consumer.stop())

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        while not (found := consumer.partitions_for_topic(self.topic)):
            await consumer.topics()  # refresh metadata until the topic exists
            await asyncio.sleep(0.5)
        return [TopicPartition(self.topic, p) for p in sorted(found)]

    def _apply(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            self.target.apply(NodeAssignment.model_validate_json(value))
        except ValidationError as exc:  # not ours: never expected, logged loudly, skipped
            log.error("undecodable assignment on %s: %s", self.topic, exc)
