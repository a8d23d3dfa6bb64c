"""Shared pytest fixtures.

Kafka (a real broker, never a mock):

* ``kafka_bootstrap`` (session): ``host:port`` of the test broker. A Tansu broker
  (:class:`pipeline.testing.EmbeddedTansu`, memory storage, free port) is started once per
  session, lazily, by the first test that needs it; set ``TOUCHPOINT_TEST_BOOTSTRAP`` to use
  an already running broker instead.
* ``kafka_config`` (session): a :class:`~pipeline.kafka_config.KafkaConfig` for it.
* ``new_topic`` (function): a factory ``new_topic(prefix="t", partitions=3) -> str`` that
  creates a topic with a name unique to the call, so tests never share data.

Add fixtures for other areas under their own heading below.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # let plain `pytest` work in a checkout that is not installed
    sys.path.insert(0, str(ROOT))

from pipeline.kafka_config import KafkaConfig  # noqa: E402
from pipeline.testing import EmbeddedTansu, create_topics, unique_name  # noqa: E402

BOOTSTRAP_ENV = "TOUCHPOINT_TEST_BOOTSTRAP"

NewTopic = Callable[..., str]


# --- Kafka ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        yield external
        return
    with EmbeddedTansu() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def kafka_config(kafka_bootstrap: str) -> KafkaConfig:
    return KafkaConfig(bootstrap=kafka_bootstrap)


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> NewTopic:
    def make(prefix: str = "t", partitions: int = 3) -> str:
        name = unique_name(prefix)
        create_topics(kafka_bootstrap, [name], partitions)
        return name

    return make


# --- ClickHouse and the pipeline -----------------------------------------------------------
# ``clickhouse_url`` (session): the embedded ClickHouse HTTP server over a fresh chDB dir.
# ``pipeline_settings`` (function): settings with unique topics, group and database, whose
# topics exist and database is migrated. ``start_worker`` (function): starts faust worker
# processes for those settings and stops them after the test.


@pytest.fixture(scope="session")
def clickhouse_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from pipeline.testing.stack import EmbeddedClickHouse

    server = EmbeddedClickHouse(tmp_path_factory.mktemp("clickhouse") / "data").start()
    yield server.url
    server.stop()


@pytest.fixture
def pipeline_settings(kafka_bootstrap: str, clickhouse_url: str, tmp_path: Path) -> Any:
    from pipeline.testing.stack import prepare, settings_for_test

    settings = settings_for_test(kafka_bootstrap, clickhouse_url, tmp_path)
    prepare(settings)
    return settings


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from pipeline.testing.stack import Process, wait_for, worker_process, worker_ready

    started: list[Process] = []

    def start(settings: Any, index: int = 0, wait: bool = True, **over: Any) -> Process:
        process = worker_process(settings, index, **over).start()
        started.append(process)
        if wait:
            wait_for(lambda: worker_ready(process), 90, f"worker {index} ready")
        return process

    yield start
    for process in started:
        process.stop()
