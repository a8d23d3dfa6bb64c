"""The identity resolver's faust-side shell: the single writer of the identity graph.

Links from every ingest batch go to a one-partition topic, so exactly one worker (the
owner of that partition) resolves them, in one order. Per batch the resolver:

1. runs the pure :func:`pipeline.identity_graph.resolve` (and :func:`forget`) on its graph;
2. publishes the outputs and waits for them: per-identifier :class:`NodeAssignment` on the
   compacted assignments topic (keyed by identifier), and one :class:`IdentityEvents`
   (merges, refusals, erasures) for the ClickHouse sinks;
3. appends the graph's changes (:class:`GraphDelta`) to its changelog topic;
4. only then lets faust ack the input.

A crash before 3 replays the batch against the older graph and publishes the same outputs
again (idempotent: same versions); a crash after 3 replays a batch already in the graph,
which changes nothing and publishes nothing new, and its outputs were already delivered
in 2. A worker that takes the partition over rebuilds the graph from the changelog first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.identity_graph import GuardrailConfig, IdentityGraph, forget, resolve
from pipeline.kafka_config import KafkaConfig
from schemas.identity import (
    CustomerMerge,
    ForgetResult,
    GraphDelta,
    IdentityEvents,
    LinkBatch,
    NodeAssignment,
    RefusedLink,
    ResolverInput,
)

log = logging.getLogger("touchpoint.resolver")


@dataclass(frozen=True)
class ResolverStep:
    """The outputs of one batch, ready to publish."""

    assignments: tuple[NodeAssignment, ...]
    events: IdentityEvents
    delta: GraphDelta


def resolve_inputs(
    graph: IdentityGraph, inputs: Sequence[ResolverInput], cfg: GuardrailConfig
) -> ResolverStep:
    """Pure: apply a batch of resolver inputs to ``graph`` (owned, mutated) in order."""
    assignments: list[NodeAssignment] = []
    merges: list[CustomerMerge] = []
    refusals: list[RefusedLink] = []
    forgotten: list[ForgetResult] = []
    for item in inputs:
        if item.links:
            out = resolve(graph, LinkBatch(links=item.links), cfg)
            assignments += out.assignments
            merges += out.merges
            refusals += out.refusals
        for node in item.forget:
            result = forget(graph, node)
            forgotten.append(result)
            assignments += erasures(result, node, graph.seq)
    events = IdentityEvents(
        assignments=tuple(assignments),
        merges=tuple(merges),
        refusals=tuple(refusals),
        forgotten=tuple(forgotten),
    )
    return ResolverStep(tuple(assignments), events, graph.dirty_entries())


def erasures(result: ForgetResult, requested: str, version: int) -> list[NodeAssignment]:
    """Assignments that mark every node of a forgotten customer as erased, and the
    requested node even when the graph never saw it (so it is dropped from now on)."""
    nodes = dict.fromkeys((*result.nodes, requested))
    return [NodeAssignment(node=n, customer_id="", version=version) for n in nodes]


async def read_changelog(
    topic: str, kafka: KafkaConfig, idle_seconds: float = 1.0
) -> IdentityGraph:
    """Rebuild the graph from every delta on the (one-partition) changelog topic."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, group_id=None, **kafka.aiokafka())
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        deltas: list[GraphDelta] = []
        quiet_since = asyncio.get_running_loop().time()
        while True:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=1000)
            now = asyncio.get_running_loop().time()
            if batch:
                deltas += [GraphDelta.model_validate_json(r.value) for r in batch[tp] if r.value]
                quiet_since = now
            elif await consumer.position(tp) >= end and now - quiet_since >= idle_seconds:
                break
        log.info("resolver: graph rebuilt from %d changelog messages", len(deltas))
        return IdentityGraph.restore(deltas)
    finally:
        await consumer.stop()


async def publish(
    step: ResolverStep, assignments_topic: Any, events_topic: Any, changelog_topic: Any
) -> None:
    """Send the outputs, wait for them, then the changelog delta, and wait again."""
    pending: list[Awaitable[Any]] = []
    for a in step.assignments:
        pending.append(
            await assignments_topic.send(key=a.node.encode(), value=a.model_dump_json().encode())
        )
    if step.events != IdentityEvents():
        pending.append(
            await events_topic.send(key=b"identity", value=step.events.model_dump_json().encode())
        )
    await asyncio.gather(*pending)
    await (
        await changelog_topic.send(
            key=b"graph", value=step.delta.model_dump_json().encode(), partition=0
        )
    )
