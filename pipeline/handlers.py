"""What each agent does with one batch. Handlers never raise into faust: an unexpected
error exits the process without committing (:func:`fail_stop`), so nothing is acked unwritten.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.ingest import IngestResult, RawMessage, ingest_batch
from pipeline.resolver import publish, read_changelog, resolve_inputs
from pipeline.rows import dead_letter_row, override_rows, refusal_rows, touchpoint_row
from pipeline.sink import OffsetRanges, dedup_token
from pipeline.stamp import customer_partition, stamp
from pipeline.validate import dead_letter
from pipeline.worker_context import Topics, Worker
from schemas.identity import IdentityEvents, ResolverInput, fallback_customer_id
from schemas.journey import MergeNotice
from schemas.records import DeadLetter, FieldError, SourceRef, TouchpointBatch

log = logging.getLogger("touchpoint.worker")
EXIT_STAGE_FAILURE = 70


async def fail_stop(stage: str, work: Awaitable[None]) -> None:
    """Run one batch's work; on an unexpected error, exit the process at once.

    faust acks a ``take_events`` batch when the agent raises, and would commit offsets of
    events never written. Exiting without clean-up commits nothing, so the batch is read
    again by whichever worker takes over: at-least-once, never lost.
    """
    try:
        await work
    except Exception:
        log.critical(
            "stage %s failed; exiting without committing so nothing is lost", stage, exc_info=True
        )
        logging.shutdown()
        os._exit(EXIT_STAGE_FAILURE)


def raw_of(event: Any) -> RawMessage:
    msg = event.message
    return RawMessage(msg.topic, msg.partition, msg.offset, event.value, msg.timestamp)


M = TypeVar("M", bound=BaseModel)


@dataclass
class Decoded(Generic[M]):
    """One take of internal batch messages: decoded records, offsets, undecodable ones."""

    records: list[M] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    """The offset of each record."""
    ranges: OffsetRanges = field(default_factory=OffsetRanges)
    bad: list[DeadLetter] = field(default_factory=list)

    def token(self, topic: Any) -> str:
        return dedup_token(topic.get_topic_name(), self.ranges)


def decode_batch(events: Sequence[Any], model: type[M], stage: str) -> Decoded[M]:
    """Decode internal messages; one that does not decode becomes a dead letter of
    ``stage`` instead of stopping the stage (it can only be a bug or a foreign writer)."""
    out: Decoded[M] = Decoded()
    for event in events:
        out.ranges.add(event.message.partition, event.message.offset, event.message.timestamp)
        try:
            out.records.append(model.model_validate_json(event.value))
            out.offsets.append(event.message.offset)
        except ValidationError as exc:
            out.bad.append(undecodable(raw_of(event), stage, exc))
    return out


async def send_dead_letters(topics: Topics, dead: Sequence[DeadLetter]) -> None:
    await asyncio.gather(*[await send_dead_letter(topics, dl) for dl in dead])


def _record_ingest(
    worker: Worker, batch: Sequence[RawMessage], result: IngestResult, now: datetime
) -> None:
    m = worker.metrics
    m.events_in.inc(len(batch))
    m.events_valid.inc(sum(len(v) for v in result.valid.values()) + result.duplicates)
    m.duplicates.inc(result.duplicates)
    for dl in result.dead:
        m.dead_lettered.labels(dl.reason, dl.stage).inc()
    for channel, count in result.unknown_types.items():
        m.unknown_event_types.labels(channel).inc(count)
    stamps = [r.timestamp_ms for r in batch if r.timestamp_ms]
    if stamps:
        m.ingest_lag_seconds.set(max(0.0, now.timestamp() - min(stamps) / 1000))
    newest = [tp.occurred_at for tps in result.valid.values() for tp in tps]
    if newest:
        m.newest_event_time.set(max(newest).timestamp())


async def send_dead_letter(topics: Topics, dl: DeadLetter) -> Awaitable[Any]:
    partition = dl.src.partition % topics.partitions
    value = dl.model_dump_json().encode()
    sent: Awaitable[Any] = await topics.dlq.send(
        key=dl.event_id.encode() or None, value=value, partition=partition
    )
    return sent


async def handle_raw(worker: Worker, topics: Topics, batch: Sequence[RawMessage]) -> None:
    """Validate, dedup and stamp a raw batch; send touchpoints by customer partition, the
    identity links to the resolver and dead letters to the DLQ; wait for all of them."""
    now = datetime.now(UTC)
    result = ingest_batch(batch, now, worker.validation, worker.window)
    _record_ingest(worker, batch, result, now)
    stamped = stamp(
        (tp for tps in result.valid.values() for tp in tps), worker.assignments, topics.partitions
    )
    worker.metrics.erased.inc(stamped.erased)
    pending = []
    for partition, records in stamped.by_partition.items():
        body = TouchpointBatch(records=tuple(records), produced_at=now).model_dump_json()
        pending.append(
            await topics.valid.send(
                key=str(partition).encode(), value=body.encode(), partition=partition
            )
        )
    if stamped.links:
        body = ResolverInput(links=stamped.links).model_dump_json()
        pending.append(await topics.links.send(key=b"links", value=body.encode(), partition=0))
    for dl in result.dead:
        pending.append(await send_dead_letter(topics, dl))
    await asyncio.gather(*pending)  # delivered (acks=all) before the raw offsets are committed


async def handle_valid(worker: Worker, topics: Topics, events: Sequence[Any]) -> None:
    """Insert the touchpoints of several ``<prefix>.journeyed`` batch messages at once."""
    got = decode_batch(events, TouchpointBatch, "sink-touchpoints")
    rows = [touchpoint_row(tp) for batch in got.records for tp in batch.records]
    await worker.sinks["touchpoints"].write(rows, got.token(topics.journeyed))
    await send_dead_letters(topics, got.bad)


async def handle_dead_letters(worker: Worker, topics: Topics, events: Sequence[Any]) -> None:
    """Insert a batch of dead letters; an undecodable one is stored as a stage error."""
    rows = []
    ranges = OffsetRanges()
    for event in events:
        ranges.add(event.message.partition, event.message.offset, event.message.timestamp)
        try:
            dl = DeadLetter.model_validate_json(event.value)
        except ValidationError as exc:
            dl = undecodable(raw_of(event), "sink-dead-letters", exc)
        rows.append(dead_letter_row(dl))
    await worker.sinks["dead_letters"].write(rows, dedup_token(topics.dlq.get_topic_name(), ranges))


async def handle_links(worker: Worker, topics: Topics, events: Sequence[Any]) -> None:
    """Resolve a batch of identity links (the single writer of the graph)."""
    if worker.graph is None:
        worker.graph = await read_changelog(
            topics.identity_changelog.get_topic_name(), worker.kafka
        )
    got = decode_batch(events, ResolverInput, "resolver")
    step = resolve_inputs(worker.graph, got.records, worker.guardrails)
    await publish(step, topics.assignments, topics.identity_events, topics.identity_changelog)
    await send_dead_letters(topics, got.bad)
    worker.metrics.identity_merges.inc(len(step.events.merges))
    for refusal in step.events.refusals:
        worker.metrics.identity_refusals.labels(refusal.reason).inc()


def journey_notices(batch: IdentityEvents) -> list[MergeNotice]:
    """What the journey stage must hear of: merges; identifiers assigned to a customer
    (events stamped with the identifier's fallback id before that built a journey under
    it, which now joins the customer's); and erased customers (no survivor)."""
    notices = [
        MergeNotice(absorbed=m.absorbed, survivor=m.survivor, version=m.version)
        for m in batch.merges
    ]
    for a in batch.assignments:
        fallback = fallback_customer_id(a.node)
        if a.customer_id and fallback != a.customer_id:
            notices.append(
                MergeNotice(absorbed=fallback, survivor=a.customer_id, version=a.version)
            )
    erased = [c for gone in batch.forgotten for c in (gone.customer_id, *gone.absorbed) if c]
    return notices + [MergeNotice(absorbed=c, survivor="") for c in erased]


async def handle_identity_events(worker: Worker, topics: Topics, events: Sequence[Any]) -> None:
    """Route merges and erasures to the journey stage; write merges (as overrides) and
    refusals to ClickHouse."""
    got = decode_batch(events, IdentityEvents, "sink-identity")
    now = datetime.now(UTC)
    await send_merge_notices(topics, [n for batch in got.records for n in journey_notices(batch)])
    token = got.token(topics.identity_events)
    overrides = [row for batch in got.records for row in override_rows(batch, now)]
    await worker.sinks["identity_overrides"].write(overrides, token)
    refusals = [row for batch in got.records for row in refusal_rows(batch)]
    await worker.sinks["identity_refusals"].write(refusals, token)
    await send_dead_letters(topics, got.bad)


async def send_merge_notices(topics: Topics, notices: Sequence[MergeNotice]) -> None:
    """Tell each absorbed (or erased) customer's journey partition (on ``<prefix>.valid``)
    about it, and wait for delivery."""
    pending = []
    for notice in notices:
        partition = customer_partition(notice.absorbed, topics.partitions)
        pending.append(
            await topics.valid.send(
                key=str(partition).encode(),
                value=notice.model_dump_json().encode(),
                partition=partition,
            )
        )
    await asyncio.gather(*pending)


def undecodable(msg: RawMessage, stage: str, exc: Exception) -> DeadLetter:
    src = SourceRef(topic=msg.topic, partition=msg.partition, offset=msg.offset)
    detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
    error = FieldError(
        path="$",
        message=f"undecodable internal message: {detail}",
        value=repr((msg.value or b"")[:80]),
    )
    return dead_letter(
        "stage_error", [error], msg.value or b"", src, datetime.now(UTC), stage=stage
    )
