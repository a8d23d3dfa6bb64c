"""``touchpoint up``: the whole pipeline on one machine, no Docker.

Order: broker -> ClickHouse -> topics -> migrations -> workers -> dashboard -> simulator.
Anything already answering at a configured address is used as is (so ``up`` also runs
against a real Kafka or ClickHouse). Ctrl-C or SIGTERM stops every process started here.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from dataclasses import dataclass
from types import FrameType
from urllib.parse import urlsplit

from rich.console import Console

from pipeline.broker import broker_reachable, create_topics, tansu_argv, topic_specs
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.errors import TouchpointError
from pipeline.kafka_config import KafkaConfig
from pipeline.migrate import migrate
from pipeline.processes import ProcessGroup, python_module
from pipeline.settings import Settings, settings_env
from pipeline.stack_status import watch
from pipeline.stage_model import load_stage_model

console = Console()


class Interrupted(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def wait_until(check: object, what: str, timeout: float, group: ProcessGroup) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]  # any zero-argument callable
        if dead := group.dead():
            logs = ", ".join(str(c.log_path) for c in dead)
            raise TouchpointError(f"{what}: a process exited early; see {logs}", stage="up")
        if time.monotonic() > deadline:
            raise TouchpointError(f"{what} did not come up within {timeout:.0f}s", stage="up")
        time.sleep(0.2)


def clickhouse_ping(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/ping", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass(frozen=True)
class Endpoints:
    broker_host: str
    broker_port: int
    ch_host: str
    ch_port: int

    @classmethod
    def of(cls, settings: Settings) -> Endpoints:
        host, _, port = KafkaConfig.from_settings(settings).servers[0].rpartition(":")
        ch = urlsplit(settings.clickhouse_url)
        return cls(
            host or "127.0.0.1", int(port or 9092), ch.hostname or "127.0.0.1", ch.port or 8123
        )


def start_services(settings: Settings, group: ProcessGroup) -> None:
    ends = Endpoints.of(settings)
    env = settings_env(settings)
    if broker_reachable(ends.broker_host, ends.broker_port):
        console.print(f"broker: using the one at {settings.kafka_bootstrap}")
    elif settings.embedded_broker:
        group.start("broker", tansu_argv(ends.broker_host, ends.broker_port), env)
        wait_until(
            lambda: broker_reachable(ends.broker_host, ends.broker_port), "broker", 30, group
        )
        console.print(f"broker: embedded Tansu on {settings.kafka_bootstrap} (memory only)")
    if clickhouse_ping(settings.clickhouse_url):
        console.print(f"clickhouse: using the one at {settings.clickhouse_url}")
    elif settings.embedded_clickhouse:
        argv = python_module(
            "pipeline.chserver",
            "--data-dir",
            str(settings.data_dir / "clickhouse"),
            "--host",
            ends.ch_host,
            "--port",
            str(ends.ch_port),
        )
        group.start("clickhouse", argv, env)
        wait_until(lambda: clickhouse_ping(settings.clickhouse_url), "clickhouse", 60, group)
        console.print(f"clickhouse: embedded chDB served at {settings.clickhouse_url}")


def prepare(settings: Settings) -> None:
    created = create_topics(KafkaConfig.from_settings(settings), topic_specs(settings))
    console.print(f"topics: {len(created)} created, partitions={settings.partitions}")
    client = connect(ClickHouseConfig.from_settings(settings), database="")
    model = load_stage_model(settings.stage_model_path)
    applied = migrate(client, settings.clickhouse_database, model=model)
    console.print(f"migrations: {len(applied)} applied to {settings.clickhouse_database}")


def start_pipeline(settings: Settings, group: ProcessGroup) -> list[int]:
    env = settings_env(settings)
    ports = [settings.worker_web_port + i for i in range(settings.workers)]
    for i, port in enumerate(ports):
        worker_env = {**env, "TOUCHPOINT_WORKER_WEB_PORT": str(port)}
        group.start(
            f"worker-{i}",
            python_module("faust", "-A", "pipeline.app", "worker", "-l", "info"),
            worker_env,
        )
    group.start("dashboard", python_module("pipeline.dashboard"), env)
    if settings.demo_rate > 0:
        argv = python_module(
            "pipeline.cli",
            "simulate",
            "--rate",
            str(settings.demo_rate),
            "--live",
            "--duration",
            "1440",
            "--quiet",
        )
        group.start("simulator", argv, env)
    return ports


def run_stack(settings: Settings) -> None:
    """Start everything, show progress until Ctrl-C, then stop everything."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    group = ProcessGroup(settings.data_dir / "logs")
    signal.signal(signal.SIGTERM, _on_signal)
    # Ctrl-C always stops the stack, even when started from a process that ignores SIGINT
    # (a background job of a script, a pytest-xdist worker): an inherited SIG_IGN would stay
    signal.signal(signal.SIGINT, _on_signal)
    try:
        start_services(settings, group)
        prepare(settings)
        ports = start_pipeline(settings, group)
        console.print(f"dashboard: http://{settings.dashboard_host}:{settings.dashboard_port}/")
        for port in ports:
            console.print(f"worker metrics: http://{settings.worker_web_host}:{port}/metrics")
        console.print(f"logs: {group.log_dir}   (Ctrl-C stops everything)")
        watch(settings, group, ports)
    except (KeyboardInterrupt, Interrupted):
        console.print("stopping...")
    finally:
        group.stop_all()
        console.print("stopped; no process left running")
