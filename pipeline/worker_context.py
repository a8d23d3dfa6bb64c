"""What a worker's agents share, built once from settings: configs, metrics, ClickHouse
sinks, the dedup window, the identity map, and the output topics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pipeline.assignment_map import AssignmentMap
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.dedup import RecentIds
from pipeline.identity_graph import GuardrailConfig, IdentityGraph
from pipeline.journey_store import JourneyStore
from pipeline.kafka_config import KafkaConfig
from pipeline.metrics import PipelineMetrics
from pipeline.raw_consumer import RawConsumerConfig
from pipeline.rows import TABLE_COLUMNS
from pipeline.settings import Settings
from pipeline.sink import ClickHouseSink, RetryPolicy
from pipeline.stage_model import StageModel, load_stage_model
from pipeline.validate import ValidationConfig


@dataclass(frozen=True)
class Topics:
    """The faust topics handlers send to."""

    valid: Any
    dlq: Any
    links: Any
    assignments: Any
    identity_events: Any
    identity_changelog: Any
    journeyed: Any
    transitions: Any
    journey_changelog: Any
    metric_inputs: Any
    stage_metrics: Any
    alerts: Any
    partitions: int


@dataclass
class Worker:
    """Everything the agents of one worker process share."""

    settings: Settings
    kafka: KafkaConfig
    metrics: PipelineMetrics
    validation: ValidationConfig
    guardrails: GuardrailConfig
    sinks: dict[str, ClickHouseSink]
    stage_model: StageModel
    journeys: JourneyStore
    """The journey states of the ``<prefix>.valid`` partitions this worker owns."""
    window: RecentIds = field(default_factory=RecentIds)
    assignments: AssignmentMap = field(default_factory=AssignmentMap)
    graph: IdentityGraph | None = None
    """The identity graph, while this worker owns the links partition (else None)."""


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

    sinks = {
        table: ClickHouseSink(factory, table, columns, metrics, retry)
        for table, columns in TABLE_COLUMNS.items()
    }
    return Worker(
        settings=settings,
        kafka=KafkaConfig.from_settings(settings),
        metrics=metrics,
        validation=validation_config(settings),
        guardrails=GuardrailConfig(),
        sinks=sinks,
        stage_model=load_stage_model(settings.stage_model_path),
        journeys=JourneyStore(
            settings.topic("journey-changelog"),
            KafkaConfig.from_settings(settings),
            hot_states=settings.journey_hot_states,
        ),
    )
