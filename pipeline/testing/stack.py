"""Test helpers for the rest of the stack: the embedded ClickHouse server, faust worker
processes, per-test settings with unique names, and waiting for a condition.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pipeline.broker import create_topics, topic_specs
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.migrate import migrate
from pipeline.processes import die_with_parent
from pipeline.settings import Settings, load_settings, settings_env
from pipeline.stage_model import load_stage_model
from pipeline.testing.kafka import free_port, unique_name

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Process:
    """A child process with its output in a log file, tied to this process's life."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.argv, self.log_path, self.env = argv, log_path, env
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True, preexec_fn=die_with_parent,  # prctl only
            )  # fmt: skip
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 15.0) -> int | None:
        if self.popen is None:
            return None
        if self.alive:
            self.popen.terminate()
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(10)

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up, no final commit."""
        if self.popen is not None and self.alive:
            self.popen.kill()
            self.popen.wait(10)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def _pinged(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ping", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class EmbeddedClickHouse(Process):
    """``python -m pipeline.chserver`` on a free port over a fresh chDB directory."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "pipeline.chserver", "--data-dir", str(data_dir)]
        super().__init__([*argv, "--port", str(self.port)], data_dir.parent / "chserver.log", env)

    def start(self, timeout: float = 60.0) -> EmbeddedClickHouse:
        super().start()
        wait_for(
            lambda: _pinged(self.url) or (not self.alive and self._died()), timeout, "chserver"
        )
        return self

    def _died(self) -> bool:
        raise AssertionError(f"chserver exited: {self.log_tail()}")


def settings_for_test(bootstrap: str, clickhouse_url: str, data_dir: Path, **over: Any) -> Settings:
    """Settings for one test: unique topics, consumer group and database, free web port."""
    name = unique_name("tp").replace("-", "_")
    defaults: dict[str, Any] = {
        "kafka_bootstrap": bootstrap, "clickhouse_url": clickhouse_url, "data_dir": data_dir,
        "app_id": name, "raw_topic": f"{name}.raw", "dlq_topic": f"{name}.dlq",
        "topic_prefix": name, "clickhouse_database": name, "partitions": 3,
        "worker_web_port": free_port(), "sink_max_seconds": 0.3, "batch_max_seconds": 0.1,
        "kafka_rebalance_timeout": 3.0,
    }  # fmt: skip
    return load_settings(**{**defaults, **over})


def prepare(settings: Settings) -> None:
    """Create the test's topics and migrate its database."""
    create_topics(KafkaConfig.from_settings(settings), topic_specs(settings))
    migrate(
        connect(ClickHouseConfig.from_settings(settings), database=""),
        settings.clickhouse_database,
        model=load_stage_model(settings.stage_model_path),
    )


def worker_process(settings: Settings, index: int = 0, **over: Any) -> Process:
    """A faust worker for these settings (not started); ``over`` changes settings."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("TOUCHPOINT_", "CLICKHOUSE_"))
    }
    env = {**inherited, **settings_env(settings)}
    env.update({f"TOUCHPOINT_{k.upper()}": str(v) for k, v in over.items()})
    argv = [sys.executable, "-m", "faust", "-A", "pipeline.app", "worker", "-l", "info"]
    return Process(argv, settings.data_dir / f"worker-{index}.log", env)


def worker_ready(process: Process) -> bool:
    if not process.alive:
        raise AssertionError(f"worker exited: {process.log_tail()}")
    return "Worker ready" in process.log_tail(100_000)
