"""Watching workers and producers report a failure, for the fault suite: each worker's
``/healthz`` and ``touchpoint_worker_healthy`` gauge, and a ``touchpoint simulate`` process,
timed from the moment the fault was injected."""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.settings import Settings, settings_env
from pipeline.testing.stack import Process

Figure = float | int | str
HEALTHY = "touchpoint_worker_healthy"


def http_get(url: str, timeout: float = 3.0) -> tuple[int | None, str]:
    """(status, body) of a GET; (None, the error) when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"


def gauge(metrics_text: str, name: str) -> float | None:
    """The value of an unlabelled Prometheus sample in a ``/metrics`` body."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", metrics_text, re.M)
    return float(found.group(1)) if found else None


def web_url(worker: Process) -> str:
    port = (worker.env or {}).get("TOUCHPOINT_WORKER_WEB_PORT")
    if port is None:
        raise ValueError("worker started without TOUCHPOINT_WORKER_WEB_PORT: pass worker_web_port")
    return f"http://127.0.0.1:{port}"


def simulate_cli(settings: Settings, log: Path, rate: float = 50.0) -> Process:
    """``touchpoint simulate`` producing steadily to ``<prefix>.cli-probe`` (a topic no
    worker reads, so its events stay out of the oracle), started."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("TOUCHPOINT_", "CLICKHOUSE_"))
    }
    argv = [
        sys.executable, "-m", "pipeline.cli", "simulate", "--rate", str(rate), "--quiet",
        "--events", "10000000", "--seed", "99", "--topic", f"{settings.topic_prefix}.cli-probe",
    ]  # fmt: skip
    return Process(argv, log, {**inherited, **settings_env(settings)}).start()


class RedWatch:
    """Seconds from ``t0`` until each worker reports the failure (``/healthz`` 503, gauge 0;
    a worker that exited counts as neither) and until the CLI exits."""

    def __init__(self, workers: list[Process], cli: Process, t0: float) -> None:
        self.workers, self.cli, self.t0 = workers, cli, t0
        self.health_red: dict[int, float] = {}
        self.metric_red: dict[int, float] = {}
        self.exited: dict[int, tuple[float, int | None]] = {}
        self.cli_exit: tuple[float, int | None] | None = None

    def status(self, worker: Process) -> tuple[str, float | None]:
        """(healthz status or "down", gauge value)."""
        metric_status, body = http_get(web_url(worker) + "/metrics")
        value = gauge(body, HEALTHY) if metric_status == 200 else None
        status, _ = http_get(web_url(worker) + "/healthz")
        return (str(status) if status is not None else "down"), value

    def poll(self) -> bool:
        now = time.monotonic() - self.t0
        for i, worker in enumerate(self.workers):
            if not worker.alive:
                self.exited.setdefault(i, (now, worker.popen.poll() if worker.popen else None))
                continue
            health, value = self.status(worker)
            if health == "503":
                self.health_red.setdefault(i, now)
            if value == 0.0:
                self.metric_red.setdefault(i, now)
        if self.cli_exit is None and not self.cli.alive:
            self.cli_exit = (now, self.cli.popen.poll() if self.cli.popen else None)
        reported = all(i in self.exited or i in self.metric_red for i in range(len(self.workers)))
        return (
            reported
            and len(self.health_red) + len(self.exited) >= len(self.workers)
            and (self.cli_exit is not None)
        )

    def run(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.poll() and time.monotonic() < deadline:
            time.sleep(0.5)

    def cli_says(self) -> str:
        lines = [ln for ln in self.cli.log_tail(20_000).splitlines() if "lost" in ln]
        return lines[-1].strip()[:160] if lines else ""

    def figures(self) -> dict[str, Figure]:
        out: dict[str, Figure] = {}
        for i in range(len(self.workers)):
            out[f"worker {i} healthz 503 after (s)"] = _secs(self.health_red.get(i))
            out[f"worker {i} gauge 0 after (s)"] = _secs(self.metric_red.get(i))
        out["simulate CLI exit code"] = (
            "running" if self.cli_exit is None else str(self.cli_exit[1])
        )
        out["simulate CLI exited after (s)"] = _secs(self.cli_exit[0] if self.cli_exit else None)
        out["simulate CLI says"] = self.cli_says() or "(nothing about lost data)"
        return out

    def problems(self, within: float) -> list[str]:
        found = []
        for i in range(len(self.workers)):
            for what, seen in (
                ("/healthz 503", self.health_red),
                (f"{HEALTHY} 0", self.metric_red),
            ):
                if seen.get(i, within + 1) > within:
                    found.append(f"worker {i}: no {what} within {within:.0f}s of the restart")
        if self.cli_exit is None or self.cli_exit[0] > within or not self.cli_exit[1]:
            found.append(f"simulate CLI did not exit non-zero within {within:.0f}s")
        elif not self.cli_says():
            found.append("simulate CLI exited without saying the broker lost data")
        return found


def _secs(value: float | None) -> Figure:
    return "never" if value is None else round(value, 1)
