"""The faust wiring: the app, its topics, agents and tasks. Agents are thin: they hand a
batch to a handler (:mod:`pipeline.handlers`), which calls the pure stages, sends the
outputs and waits for them; only then does faust ack the batch (``take_events`` acks after
the loop body returns).

Data flow (``<p>`` is ``TOUCHPOINT_TOPIC_PREFIX``):

- task ``ingest``: ``touchpoints.raw`` (aiokafka batches) -> validate, dedup, stamp ->
  ``<p>.valid`` (by customer partition), ``<p>.links`` (1 partition), ``touchpoints.dlq``
- agent ``resolver``: ``<p>.links`` -> identity graph -> ``<p>.assignments`` (compacted),
  ``<p>.identity-events``, ``<p>.identity-changelog``
- task ``assignments``: tails ``<p>.assignments`` into the worker's identity map
- agent ``journey``: ``<p>.valid`` (touchpoint batches, merge notices, state handoffs) ->
  journey states (in memory per partition) -> ``<p>.journeyed`` (stamped with journey and
  stage), ``<p>.transitions`` (rows), ``<p>.journey-changelog`` (changed states per batch)
- agent ``sink-identity`` also routes each merge to the absorbed customer's ``<p>.valid``
  partition as a merge notice
- agents ``sink-*``: ``<p>.journeyed``, ``<p>.transitions``, ``touchpoints.dlq``,
  ``<p>.identity-events`` -> ClickHouse
- agent ``stage-metrics``: ``<p>.metric-inputs`` (1 partition, one message per journey
  batch) -> windows, late changes, alerts -> ``<p>.stage-metrics`` (live feed),
  ``<p>.alerts``, ClickHouse ``stage_metrics``/``late_events``/``alerts``, the webhook
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import faust
from faust.streams import Stream
from faust.types import EventT

from pipeline import shutdown_deadline
from pipeline.assignment_map import AssignmentReader
from pipeline.handlers import (
    fail_stop,
    handle_dead_letters,
    handle_identity_events,
    handle_links,
    handle_raw,
    handle_valid,
)
from pipeline.ingest import RawMessage
from pipeline.journey_handlers import handle_journey, handle_transitions
from pipeline.kafka_config import KafkaConfig
from pipeline.metrics import PipelineMetrics
from pipeline.metrics_handlers import (
    MetricsRuntime,
    handle_metric_inputs,
    metrics_config,
    webhook_sender,
)
from pipeline.raw_consumer import RawConsumer
from pipeline.settings import Settings
from pipeline.worker_context import Topics, Worker, make_worker, raw_consumer_config

RESOLVER_BATCH = 64
JOURNEY_BATCH = 64
"""``<prefix>.valid`` messages per journey batch (each a batch of events itself)."""
METRICS_BATCH = 64


def batches(
    stream: faust.StreamT[bytes], size: int, within: float
) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """``take_events``: a batch is acked only after the loop body that got it returns."""
    return cast(Stream[bytes], stream).take_events(size, within)  # StreamT lacks take_events


def make_app(settings: Settings, kafka: KafkaConfig) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{s}" for s in kafka.servers],
        broker_credentials=kafka.faust_credentials(),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=16 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
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


def make_topics(app: faust.App, settings: Settings) -> Topics:
    def topic(name: str, partitions: int = settings.partitions) -> Any:
        return app.topic(name, value_serializer="raw", key_serializer="raw", partitions=partitions)

    return Topics(
        valid=topic(settings.topic("valid")),
        dlq=topic(settings.dlq_topic),
        links=topic(settings.topic("links"), 1),
        assignments=topic(settings.topic("assignments")),
        identity_events=topic(settings.topic("identity-events"), 1),
        identity_changelog=topic(settings.topic("identity-changelog"), 1),
        journeyed=topic(settings.topic("journeyed")),
        transitions=topic(settings.topic("transitions")),
        journey_changelog=topic(settings.topic("journey-changelog")),
        metric_inputs=topic(settings.topic("metric-inputs"), 1),
        stage_metrics=topic(settings.topic("stage-metrics"), 1),
        alerts=topic(settings.topic("alerts"), 1),
        partitions=settings.partitions,
    )


def build_app(settings: Settings, metrics: PipelineMetrics | None = None) -> faust.App:
    """The faust app with its topics, agents and tasks, from explicit settings."""
    metrics = metrics or PipelineMetrics.create()
    kafka = KafkaConfig.from_settings(settings)
    app = make_app(settings, kafka)
    worker = make_worker(settings, metrics)
    topics = make_topics(app, settings)
    install_ingest(app, worker, topics)
    install_identity(app, worker, topics)
    install_journey(app, worker, topics)
    install_sinks(app, worker, topics)
    runtime = install_metrics(app, worker, topics)
    from pipeline.worker_web import install_web

    install_web(app, worker, runtime)
    shutdown_deadline.install(app, settings.shutdown_deadline)
    return app


def install_ingest(app: faust.App, worker: Worker, topics: Topics) -> None:
    raw_consumer = RawConsumer(raw_consumer_config(worker.settings), worker.kafka, worker.metrics)
    reader = AssignmentReader(topics.assignments.get_topic_name(), worker.kafka, worker.assignments)

    @app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def assignments() -> None:
        await reader.run()

    @app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
    async def ingest() -> None:
        async def handle(batch: Sequence[RawMessage]) -> None:
            await fail_stop("ingest", handle_raw(worker, topics, batch))

        await worker.assignments.caught_up.wait()  # erased identifiers are known first
        await raw_consumer.run(handle)


def install_identity(app: faust.App, worker: Worker, topics: Topics) -> None:
    @app.agent(topics.links, name="resolver")
    async def resolver(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in batches(stream, RESOLVER_BATCH, worker.settings.batch_max_seconds):
            await fail_stop("resolver", handle_links(worker, topics, events))
            yield None

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust types receivers narrower than it calls them
    async def drop_graph(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", args[0] if args else set())
        if any(tp.topic == topics.links.get_topic_name() for tp in revoked):
            worker.graph = None  # whoever owns the partition next rebuilds it from the changelog


def install_journey(app: faust.App, worker: Worker, topics: Topics) -> None:
    s = worker.settings

    @app.agent(topics.valid, name="journey")
    async def journey(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in batches(stream, JOURNEY_BATCH, s.batch_max_seconds):
            await fail_stop("journey", handle_journey(worker, topics, events))
            yield None

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust types receivers narrower than it calls them
    async def drop_journeys(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", args[0] if args else set())
        valid = topics.valid.get_topic_name()
        worker.journeys.drop(tp.partition for tp in revoked if tp.topic == valid)


def install_sinks(app: faust.App, worker: Worker, topics: Topics) -> None:
    s = worker.settings
    # a journeyed message holds one customer partition's share of an ingest batch
    per_take = min(64, max(1, s.sink_max_rows * s.partitions // s.batch_max_events))

    @app.agent(topics.journeyed, name="sink-touchpoints")
    async def sink_touchpoints(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in batches(stream, per_take, s.sink_max_seconds):
            await fail_stop("sink-touchpoints", handle_valid(worker, topics, events))
            yield None

    @app.agent(topics.dlq, name="sink-dead-letters")
    async def sink_dead_letters(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in batches(stream, s.sink_max_rows, s.sink_max_seconds):
            await fail_stop("sink-dead-letters", handle_dead_letters(worker, topics, events))
            yield None

    @app.agent(topics.transitions, name="sink-journeys")
    async def sink_journeys(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in batches(stream, per_take, s.sink_max_seconds):
            await fail_stop("sink-journeys", handle_transitions(worker, topics, events))
            yield None

    @app.agent(topics.identity_events, name="sink-identity")
    async def sink_identity(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in batches(stream, 256, s.sink_max_seconds):
            await fail_stop("sink-identity", handle_identity_events(worker, topics, events))
            yield None


def install_metrics(app: faust.App, worker: Worker, topics: Topics) -> MetricsRuntime:
    """The metrics agent (one partition: one worker holds the state) and its webhook."""
    s = worker.settings
    runtime = MetricsRuntime(metrics_config(s, worker.stage_model), webhook_sender(s, worker))

    @app.agent(topics.metric_inputs, name="stage-metrics")
    async def stage_metrics(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for events in batches(stream, METRICS_BATCH, s.batch_max_seconds):
            await fail_stop("stage-metrics", handle_metric_inputs(worker, topics, runtime, events))
            yield None

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust types receivers narrower than it calls them
    async def drop_metrics(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", args[0] if args else set())
        if any(tp.topic == topics.metric_inputs.get_topic_name() for tp in revoked):
            runtime.reset()  # whoever owns the partition next replays the inputs

    if runtime.sender is not None:
        sender = runtime.sender

        @app.task  # type: ignore[untyped-decorator]  # faust's decorator is untyped
        async def webhook() -> None:
            await sender.start()

    return runtime
