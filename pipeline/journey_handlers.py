"""What the journey agents do with one batch (see :mod:`pipeline.journey_stage`).

``journey`` (on ``<prefix>.valid``), per partition of the batch: restore the partition's
states if this worker does not hold them yet, run the pure stage, send the stamped
touchpoints to ``<prefix>.journeyed`` and the rows to ``<prefix>.transitions`` (same
partition), forwards and handoffs to other partitions of ``<prefix>.valid``, wait for all of
them, then append the changed states to ``<prefix>.journey-changelog`` and wait again; only
then does faust ack the batch. ``sink-journeys`` writes ``<prefix>.transitions`` to
ClickHouse. Like every handler, these never raise into faust (they run under ``fail_stop``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pipeline.handlers import decode_batch, raw_of, send_dead_letter, send_dead_letters, undecodable
from pipeline.journey_stage import BatchOutput, ValidMsg, is_empty, run_batch
from pipeline.metric_input import metric_input
from pipeline.rows import customer_row, journey_row, transition_row
from pipeline.worker_context import Topics, Worker
from schemas.journey import VALID_MESSAGE, TransitionBatch
from schemas.records import DeadLetter, TouchpointBatch


def decode(events: Sequence[Any]) -> tuple[dict[int, list[ValidMsg]], list[DeadLetter]]:
    """The batch's messages by partition, in offset order, and dead letters for the bad."""
    by_partition: dict[int, list[ValidMsg]] = defaultdict(list)
    bad: list[DeadLetter] = []
    for event in events:
        try:
            by_partition[event.message.partition].append(VALID_MESSAGE.validate_json(event.value))
        except ValidationError as exc:
            bad.append(undecodable(raw_of(event), "journey", exc))
    return by_partition, bad


async def handle_journey(worker: Worker, topics: Topics, events: Sequence[Any]) -> None:
    """Advance the journeys of a batch of ``<prefix>.valid`` messages."""
    by_partition, bad = decode(events)
    outputs: dict[int, BatchOutput] = {}
    for partition, messages in sorted(by_partition.items()):
        part = await worker.journeys.ensure(partition)
        outputs[partition] = run_batch(
            part, partition, topics.partitions, messages, worker.stage_model
        )
    now = datetime.now(UTC)
    pending: list[Awaitable[Any]] = [await send_dead_letter(topics, dl) for dl in bad]
    for partition, out in outputs.items():
        pending += await send_outputs(topics, partition, out, now)
    fed = metric_input(
        [tp for out in outputs.values() for tp in out.stamped],
        [t for out in outputs.values() for t in out.transitions],
        [c for out in outputs.values() for c in out.customers],
        now,
        {p: max(tp.occurred_at for tp in out.stamped) for p, out in outputs.items() if out.stamped},
    )
    if fed is not None:
        body = fed.model_dump_json().encode()
        pending.append(await topics.metric_inputs.send(key=b"0", value=body, partition=0))
    await asyncio.gather(*pending)  # outputs delivered (acks=all) before the state is saved
    saved = [
        await topics.journey_changelog.send(
            key=str(p).encode(), value=out.changelog.model_dump_json().encode(), partition=p
        )
        for p, out in outputs.items()
        if not is_empty(out.changelog)
    ]
    await asyncio.gather(*saved)


async def send_outputs(
    topics: Topics, partition: int, out: BatchOutput, now: datetime
) -> list[Awaitable[Any]]:
    """Send one partition's outputs; returns the deliveries to wait for."""
    key = str(partition).encode()
    pending: list[Awaitable[Any]] = []
    if out.stamped:
        body = TouchpointBatch(records=tuple(out.stamped), produced_at=now).model_dump_json()
        pending.append(
            await topics.journeyed.send(key=key, value=body.encode(), partition=partition)
        )
    if out.transitions or out.journeys or out.customers:
        rows = TransitionBatch(
            records=tuple(out.transitions),
            journeys=tuple(out.journeys),
            customers=tuple(out.customers),
            produced_at=now,
        )
        pending.append(
            await topics.transitions.send(
                key=key, value=rows.model_dump_json().encode(), partition=partition
            )
        )
    for target, messages in out.forward.items():
        for msg in messages:
            pending.append(
                await topics.valid.send(
                    key=str(target).encode(), value=msg.model_dump_json().encode(), partition=target
                )
            )
    return pending


async def handle_transitions(worker: Worker, topics: Topics, events: Sequence[Any]) -> None:
    """Write stage transitions, journeys and customer profiles to ClickHouse."""
    got = decode_batch(events, TransitionBatch, "sink-journeys")
    token = got.token(topics.transitions)
    rows = [transition_row(t) for batch in got.records for t in batch.records]
    await worker.sinks["stage_transitions"].write(rows, token)
    rows = [journey_row(j) for batch in got.records for j in batch.journeys]
    await worker.sinks["journeys"].write(rows, token)
    rows = [customer_row(c) for batch in got.records for c in batch.customers]
    await worker.sinks["customers"].write(rows, token)
    await send_dead_letters(topics, got.bad)
