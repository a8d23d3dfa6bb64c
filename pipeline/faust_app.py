"""The faust wiring: app, topics and agents. Agents are thin: they turn faust events into
plain records, call the pure stage functions, send the outputs, and only then let faust
acknowledge the input (``take_events`` acks a batch after the loop body returns).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import EventT
from pydantic import ValidationError

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.dedup import RecentIds
from pipeline.ingest import IngestResult, RawMessage, ingest_batch
from pipeline.kafka_config import KafkaConfig
from pipeline.metrics import PipelineMetrics
from pipeline.raw_consumer import RawConsumer, RawConsumerConfig
from pipeline.rows import DEAD_LETTER_COLUMNS, TOUCHPOINT_COLUMNS, dead_letter_row, touchpoint_row
from pipeline.settings import Settings
from pipeline.sink import ClickHouseSink, OffsetRanges, RetryPolicy, dedup_token
from pipeline.validate import ValidationConfig, dead_letter
from schemas.records import DeadLetter, FieldError, SourceRef, TouchpointBatch

log = logging.getLogger("touchpoint.worker")
EXIT_STAGE_FAILURE = 70


@dataclass
class Worker:
    """Everything the agents share: config, metrics, sinks, the dedup window."""

    settings: Settings
    metrics: PipelineMetrics
    validation: ValidationConfig
    touchpoint_sink: ClickHouseSink
    dead_letter_sink: ClickHouseSink
    window: RecentIds = field(default_factory=RecentIds)


def validation_config(settings: Settings) -> ValidationConfig:
    return ValidationConfig(
        hash_key=settings.pii_hash_key.get_secret_value().encode(),
        hash_pii=settings.pii_mode == "hash",
        max_bytes=settings.max_event_bytes,
        placeholders=settings.placeholders,
        phone_region=settings.default_phone_region,
        max_future=timedelta(seconds=settings.max_future_seconds),
    )


def raw_consumer_config(settings: Settings) -> RawConsumerConfig:
    return RawConsumerConfig(
        topic=settings.raw_topic,
        group_id=f"{settings.app_id}-ingest",
        batch_max_events=settings.batch_max_events,
        batch_max_seconds=settings.batch_max_seconds,
        session_timeout=settings.kafka_session_timeout,
        rebalance_timeout=settings.kafka_rebalance_timeout,
        max_event_bytes=settings.max_event_bytes,
    )


def make_worker(settings: Settings, metrics: PipelineMetrics) -> Worker:
    ch = ClickHouseConfig.from_settings(settings)
    retry = RetryPolicy(max_delay=settings.sink_retry_max_seconds)

    def factory() -> Any:
        return connect(ch, compress=False, autogenerate_session_id=False)

    return Worker(
        settings=settings,
        metrics=metrics,
        validation=validation_config(settings),
        touchpoint_sink=ClickHouseSink(factory, "touchpoints", TOUCHPOINT_COLUMNS, metrics, retry),
        dead_letter_sink=ClickHouseSink(
            factory, "dead_letters", DEAD_LETTER_COLUMNS, metrics, retry
        ),
    )


def batches(
    stream: faust.StreamT[bytes], size: int, within: float
) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """``take_events``: a batch is acked only after the loop body that got it returns."""
    return cast(Stream[bytes], stream).take_events(size, within)  # StreamT lacks take_events


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


def _raw(event: Any) -> RawMessage:
    msg = event.message
    return RawMessage(msg.topic, msg.partition, msg.offset, event.value, msg.timestamp)


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


def build_app(settings: Settings, metrics: PipelineMetrics | None = None) -> faust.App:
    """The faust app with its topics and agents, from explicit settings."""
    metrics = metrics or PipelineMetrics.create()
    kafka = KafkaConfig.from_settings(settings)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{s}" for s in kafka.servers],
        broker_credentials=kafka.faust_credentials(),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=max(2 * settings.max_event_bytes, 4_000_000),
        consumer_max_fetch_size=8 * 1024 * 1024,
        broker_commit_interval=1.0,
        web_bind=settings.worker_web_host,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        datadir=str(settings.data_dir / "faust"),
        broker_rebalance_timeout=settings.kafka_rebalance_timeout,
        broker_session_timeout=settings.kafka_session_timeout,
        broker_heartbeat_interval=1.0,
    )
    worker = make_worker(settings, metrics)
    valid = app.topic(
        settings.topic("valid"),
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.partitions,
    )
    dlq = app.topic(
        settings.dlq_topic,
        value_serializer="raw",
        key_serializer="raw",
        partitions=settings.partitions,
    )

    topics = Topics(valid=valid, dlq=dlq, partitions=settings.partitions)

    raw_consumer = RawConsumer(raw_consumer_config(settings), kafka, metrics)

    @app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def ingest() -> None:
        async def handle(batch: Sequence[RawMessage]) -> None:
            await fail_stop("ingest", handle_raw(worker, topics, batch))

        await raw_consumer.run(handle)

    @app.agent(valid, name="sink-touchpoints")
    async def sink_touchpoints(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        # a message holds one raw partition's share of an ingest batch
        per_take = min(
            64, max(1, settings.sink_max_rows * settings.partitions // settings.batch_max_events)
        )
        async for events in batches(stream, per_take, settings.sink_max_seconds):
            await fail_stop("sink-touchpoints", handle_valid(worker, topics, events))
            yield None

    @app.agent(dlq, name="sink-dead-letters")
    async def sink_dead_letters(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in batches(stream, settings.sink_max_rows, settings.sink_max_seconds):
            await fail_stop("sink-dead-letters", handle_dead_letters(worker, topics, events))
            yield None

    from pipeline.worker_web import install_web

    install_web(app, worker)
    return app


@dataclass(frozen=True)
class Topics:
    """The output topics the handlers send to."""

    valid: faust.TopicT
    dlq: faust.TopicT
    partitions: int


async def handle_raw(worker: Worker, topics: Topics, batch: Sequence[RawMessage]) -> None:
    """Validate and dedup a batch; send valid batches and dead letters, and wait for both."""
    now = datetime.now(UTC)
    result = ingest_batch(batch, now, worker.validation, worker.window)
    _record_ingest(worker, batch, result, now)
    pending = []
    for partition, records in result.valid.items():
        body = TouchpointBatch(records=tuple(records), produced_at=now).model_dump_json()
        key = str(partition).encode()
        pending.append(await topics.valid.send(key=key, value=body.encode(), partition=partition))
    for dl in result.dead:
        pending.append(await send_dead_letter(topics, dl))
    await asyncio.gather(*pending)  # delivered (acks=all) before the input is acked


async def send_dead_letter(topics: Topics, dl: DeadLetter) -> Awaitable[Any]:
    partition = dl.src.partition % topics.partitions
    value = dl.model_dump_json().encode()
    return await topics.dlq.send(key=dl.event_id.encode() or None, value=value, partition=partition)


async def handle_valid(worker: Worker, topics: Topics, events: Sequence[EventT[bytes]]) -> None:
    """Insert the touchpoints of a batch of batch-messages in one ClickHouse insert."""
    rows: list[list[Any]] = []
    ranges, bad = OffsetRanges(), []
    for event in events:
        ranges.add(event.message.partition, event.message.offset)
        try:
            batch = TouchpointBatch.model_validate_json(event.value)
        except ValidationError as exc:
            bad.append(_undecodable(_raw(event), "sink-touchpoints", exc))
            continue
        rows.extend(touchpoint_row(tp) for tp in batch.records)
    await worker.touchpoint_sink.write(
        rows, dedup_token(topics.valid.get_topic_name(), ranges.ranges)
    )
    await asyncio.gather(*[await send_dead_letter(topics, dl) for dl in bad])


async def handle_dead_letters(
    worker: Worker, topics: Topics, events: Sequence[EventT[bytes]]
) -> None:
    """Insert a batch of dead letters; an undecodable one is stored as a stage error."""
    rows = []
    ranges = OffsetRanges()
    for event in events:
        ranges.add(event.message.partition, event.message.offset)
        try:
            dl = DeadLetter.model_validate_json(event.value)
        except ValidationError as exc:
            dl = _undecodable(_raw(event), "sink-dead-letters", exc)
        rows.append(dead_letter_row(dl))
    await worker.dead_letter_sink.write(
        rows, dedup_token(topics.dlq.get_topic_name(), ranges.ranges)
    )


def _undecodable(msg: RawMessage, stage: str, exc: Exception) -> DeadLetter:
    src = SourceRef(topic=msg.topic, partition=msg.partition, offset=msg.offset)
    error = FieldError(
        path="$",
        message=f"undecodable internal message: {exc.errors()[0]['msg'] if isinstance(exc, ValidationError) else exc}",
        value=repr((msg.value or b"")[:80]),
    )
    return dead_letter(
        "stage_error", [error], msg.value or b"", src, datetime.now(UTC), stage=stage
    )


__all__ = ["Worker", "build_app", "make_worker", "validation_config"]
