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

Running in parallel: ``scripts/test`` runs pytest with pytest-xdist (``-n 3 --dist
loadgroup``). Every test already gets its own topics, consumer group, database and ports, and
each xdist process starts its own broker and ClickHouse server (session fixtures), so test
files may run side by side. The long end-to-end runs (:data:`LONG_RUNS`) are scheduled
first (the longest work first keeps the processes busy until the end); the files whose
tests share a module-scoped pipeline run are xdist groups (:data:`SHARED_RUNS`), and so are
the runs compared with each other (:data:`COMPARED_RUNS`, one at a time).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # let plain `pytest` work in a checkout that is not installed
    sys.path.insert(0, str(ROOT))

from pipeline.kafka_config import KafkaConfig  # noqa: E402
from pipeline.testing import EmbeddedTansu, create_topics, unique_name  # noqa: E402

BOOTSTRAP_ENV = "TOUCHPOINT_TEST_BOOTSTRAP"

NewTopic = Callable[..., str]


# --- parallel runs (pytest-xdist) ----------------------------------------------------------

LONG_RUNS = (
    "tests/integration/test_alerts_pipeline.py",
    "tests/integration/test_eval_stitching.py",
    "tests/integration/test_scale_out.py",
    "tests/integration/test_alert_detection.py",
    "tests/faults/test_faults.py",
    "tests/integration/test_restart_state.py",
    "tests/integration/test_scale_identity.py",
    "tests/integration/test_forget.py",
    "tests/integration/test_painpoint_ranking.py",
    "tests/integration/test_journeys.py",
)
"""Test files with runs of a minute or more (3 to 5 minutes for the first two), started
first and in this order, so that the xdist processes end together instead of one
waiting for the other's last long run. The paced alert run (mostly waiting) starts beside
the CPU-heavy stitching run."""
SHARED_RUNS = (
    "tests/integration/test_grafana_dashboards.py",
    "tests/integration/test_product_sql.py",
)
"""Test files whose tests share one module-scoped pipeline run (half a minute each): each
file is an xdist group, so that run is built once, not once per xdist process."""
COMPARED_RUNS = (
    "tests/integration/test_restart_state.py",
    "tests/integration/test_scale_identity.py",
    "tests/integration/test_scale_out.py",
)
"""Test files that compare two pipeline runs of one input, allowing only the differences the
order of arrival explains: one xdist group, so that no two of them run at once (the more the
CPUs are shared, the more arrival orders differ). (Groups need
pytest < 9.2: with 9.2 pytest-xdist 3.8's loadgroup silently stops grouping, its issue
#1386; pyproject.toml pins pytest below it.)"""


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def path_of(item: pytest.Item) -> str:
        return item.path.relative_to(ROOT).as_posix() if item.path.is_relative_to(ROOT) else ""

    for item in items:
        path = path_of(item)
        if path in SHARED_RUNS:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
        elif path in COMPARED_RUNS:
            item.add_marker(pytest.mark.xdist_group("compared-runs"))
    rank = {path: n for n, path in enumerate(LONG_RUNS)}
    # a stable sort: the long runs first, in LONG_RUNS order, then the rest as collected
    items.sort(key=lambda item: rank.get(path_of(item), len(LONG_RUNS)))


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
# processes for those settings and stops them after the test (SIGTERM at teardown; the
# wait for them to exit runs in the background and is joined at the end of the session).


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


@pytest.fixture(scope="session")
def _stopping_workers(
    kafka_bootstrap: str, clickhouse_url: str
) -> Iterator[list[threading.Thread]]:
    """Threads stopping the workers of finished tests while the next test runs (a faust
    worker takes a second or two to stop; each test has its own topics, group and database).
    All are joined at the end of the session, before the broker and ClickHouse stop."""
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join()


@pytest.fixture
def start_worker(
    tmp_path: Path, _stopping_workers: list[threading.Thread]
) -> Iterator[Callable[..., Any]]:
    from pipeline.testing.stack import Process, wait_for, worker_process, worker_ready

    started: list[Process] = []

    def start(settings: Any, index: int = 0, wait: bool = True, **over: Any) -> Process:
        process = worker_process(settings, index, **over).start()
        started.append(process)
        if wait:
            wait_for(lambda: worker_ready(process), 90, f"worker {index} ready")
        return process

    yield start
    for process in started:  # SIGTERM them all at once, then let them finish in the background
        if process.alive and process.popen is not None:
            process.popen.terminate()

    def stop_all() -> None:
        for process in started:
            process.stop()

    thread = threading.Thread(target=stop_all, name="stop-workers", daemon=True)
    thread.start()
    _stopping_workers.append(thread)
