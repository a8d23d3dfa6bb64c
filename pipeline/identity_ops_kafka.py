"""The Kafka side of a GDPR forget: ask the resolver, then watch for its answer.

The request is a :class:`ResolverInput` with ``forget=(node,)`` on partition 0 of
``<prefix>.links``, the resolver's only input, so it is applied in order with the links.
The answer is the resolver's erasure: a :class:`NodeAssignment` with ``customer_id=""`` for
every node of the person on ``<prefix>.assignments`` (what the workers' ingest drops
erased identifiers by), and a :class:`ForgetResult` in an :class:`IdentityEvents` on
``<prefix>.identity-events`` (the customer ids and every node erased).

The watcher reads the assignments topic from the beginning (a node forgotten by an
earlier request has its erasure there already, and no new one comes) and the identity
events from just before the request. The resolver publishes nothing on the assignments
topic for a node that it never saw: then only an empty :class:`ForgetResult` comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from pydantic import ValidationError

from pipeline.errors import BrokerError
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from schemas.identity import ForgetResult, IdentityEvents, NodeAssignment, ResolverInput

GRACE_SECONDS = 2.0
"""How long to wait for the rest of an answer once part of it arrived."""
PROGRESS_SECONDS = 2.0
STAGE = "forget.kafka"


def request_forget(kafka: KafkaConfig, links_topic: str, node: str, timeout: float = 30.0) -> int:
    """Produce the forget request to partition 0 of the links topic; returns its offset."""
    producer = make_producer(kafka, client_id="touchpoint-forget", linger_ms=0)
    try:
        value = ResolverInput(forget=(node,)).model_dump_json().encode()
        future = producer.send(links_topic, value=value, key=b"forget", partition=0)
        producer.flush(timeout)
        return int(future.get(timeout).offset)
    except KafkaError as exc:
        raise BrokerError(
            f"forget request for {node} not delivered to {links_topic}: {exc}"
        ) from exc
    finally:
        producer.close(timeout)


@dataclass(frozen=True)
class ErasureOutcome:
    confirmed: bool
    """The resolver answered (an erasure of the node, or an empty result for an unknown node)."""
    known: bool
    """The node is erased on the assignments topic (the workers drop it on ingest)."""
    nodes: tuple[str, ...] = ()
    customers: tuple[str, ...] = ()


class ErasureWatch:
    """What the resolver has said about one node so far (pure: fed records and times)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.erasures: dict[str, int] = {}
        self.result: ForgetResult | None = None
        self.erased_at: float | None = None
        self.empty_at: float | None = None
        self.caught_up_at: float | None = None

    def on_assignment(self, value: bytes | None, now: float) -> None:
        if not value or b'""' not in value:  # erasures carry customer_id ""
            return
        try:
            assignment = NodeAssignment.model_validate_json(value)
        except ValidationError:
            return
        if assignment.customer_id == "":
            self.erasures[assignment.node] = assignment.version
            if assignment.node == self.node and self.erased_at is None:
                self.erased_at = now

    def on_identity_events(self, value: bytes | None, now: float) -> None:
        try:
            events = IdentityEvents.model_validate_json(value or b"")
        except ValidationError:
            return
        for result in events.forgotten:
            if self.node in result.nodes:
                self.result = result
            elif not result.nodes and self.empty_at is None:
                self.empty_at = now

    def on_caught_up(self, now: float) -> None:
        """The assignments topic was read to its end once."""
        if self.caught_up_at is None:
            self.caught_up_at = now

    def finished(self, now: float) -> bool:
        if self.erased_at is not None:
            return self.result is not None or now - self.erased_at >= GRACE_SECONDS
        if self.empty_at is None or self.caught_up_at is None:
            return False
        return now - max(self.empty_at, self.caught_up_at) >= GRACE_SECONDS

    def outcome(self) -> ErasureOutcome:
        known = self.node in self.erasures
        confirmed = known or self.result is not None or self.empty_at is not None
        if self.result is not None:
            ids = (self.result.customer_id, *self.result.absorbed)
            return ErasureOutcome(confirmed, known, self.result.nodes, tuple(i for i in ids if i))
        version = self.erasures.get(self.node)
        nodes = tuple(sorted(n for n, v in self.erasures.items() if v == version)) if known else ()
        return ErasureOutcome(confirmed, known, nodes)


class ErasureTail:
    """An ``assign()`` consumer on the assignments and identity-events topics.

    Positions are taken when it is created: create it before sending the request.
    """

    def __init__(self, kafka: KafkaConfig, assignments: str, identity_events: str) -> None:
        self.assignments = assignments
        try:
            self.consumer = KafkaConsumer(
                group_id=None, enable_auto_commit=False, **kafka.kafka_python()
            )
            parts = [TopicPartition(assignments, p) for p in self._partitions(assignments)]
            events = TopicPartition(identity_events, 0)
            self.consumer.assign([*parts, events])
            self.consumer.seek_to_beginning(*parts)
            self.consumer.seek(events, self.consumer.end_offsets([events])[events])
            self._skip_existing(parts)
        except KafkaError as exc:
            raise BrokerError(f"cannot read {assignments} and {identity_events}: {exc}") from exc

    def _skip_existing(self, parts: list[TopicPartition], limit: float = 2.0) -> None:
        """Read past the identity events already there (some brokers, Tansu among them,
        answer an end offset short of the last batch), so an old answer is not taken for
        this request's; bounded, for a topic that never goes quiet."""
        self.consumer.pause(*parts)
        deadline = time.monotonic() + limit
        while self.consumer.poll(timeout_ms=300) and time.monotonic() < deadline:
            pass
        self.consumer.resume(*parts)

    def _partitions(self, topic: str, timeout: float = 30.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while not (found := self.consumer.partitions_for_topic(topic)):
            if time.monotonic() > deadline:
                raise BrokerError(f"topic {topic} not found (is the pipeline set up?)")
            self.consumer.topics()  # refresh metadata
            time.sleep(0.2)
        return sorted(found)

    def poll(self, timeout_ms: int = 200) -> Iterator[tuple[str, bytes | None]]:
        """(topic, value) of the records that arrived; ("", None) when none came."""
        try:
            batch: dict[Any, list[Any]] = self.consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            raise BrokerError(f"reading the resolver's answer failed: {exc}") from exc
        if not any(tp.topic == self.assignments for tp in batch):
            yield "", None
        for tp, records in batch.items():
            for record in records:
                yield tp.topic, record.value

    def close(self) -> None:
        self.consumer.close()


def wait_for_erasure(
    tail: ErasureTail, watch: ErasureWatch, deadline: float, progress: Callable[[str], None]
) -> ErasureOutcome:
    """Feed the watch until the resolver answered or ``deadline`` (monotonic) passed."""
    started = last_said = time.monotonic()
    while not watch.finished(now := time.monotonic()) and now < deadline:
        for topic, value in tail.poll():
            seen = time.monotonic()
            if not topic:
                watch.on_caught_up(seen)
            elif topic == tail.assignments:
                watch.on_assignment(value, seen)
            else:
                watch.on_identity_events(value, seen)
        if now - last_said >= PROGRESS_SECONDS:
            last_said = now
            progress(f"waiting for the resolver to erase {watch.node} ({now - started:.0f}s)")
    return watch.outcome()
