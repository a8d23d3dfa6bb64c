"""Shared pieces of the benchmarks: figures (median, min, max of R runs), the simulated
events every benchmark reads, the child processes to stop on exit, and machine load."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.producers.simulator import SimEvent, SimulationConfig, simulate
from pipeline.testing.stack import Process

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    """One measured quantity over the runs; ``ratios`` are per-run ratios to baselines."""

    benchmark: str
    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    def add(self, value: float) -> None:
        self.values.append(value)

    def ratio(self, baseline: str, value: float) -> None:
        self.ratios.setdefault(baseline, []).append(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark, "name": self.name, "unit": self.unit,
            "runs": self.values, **spread(self.values), "note": self.note,
            "ratios": {k: {"runs": v, **spread(v)} for k, v in self.ratios.items()},
        }  # fmt: skip


def spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class Figures:
    """The figures of one benchmark, created on first use, in insertion order."""

    def __init__(self, benchmark: str) -> None:
        self.benchmark = benchmark
        self.items: dict[str, Figure] = {}

    def __call__(self, name: str, unit: str, note: str = "") -> Figure:
        if name not in self.items:
            self.items[name] = Figure(self.benchmark, name, unit, note=note)
        return self.items[name]


# --- the simulated events ---------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    events: list[SimEvent]

    @property
    def valid_ids(self) -> set[str]:
        return {e.event_id for e in self.events if e.malformed is None and e.event_id}

    @property
    def malformed(self) -> int:
        return sum(1 for e in self.events if e.malformed is not None)


def make_events(count: int, seed: int = 7) -> Workload:
    """About ``count`` simulated messages (defaults: malformed, duplicates, late events),
    occurring in the two hours before now so none is in the future."""
    config = SimulationConfig(
        seed=seed, start=datetime.now(UTC) - timedelta(hours=2, minutes=5),
        duration=timedelta(hours=2), customers=max(50, count // 6), max_events=count,
    )  # fmt: skip
    return Workload(list(simulate(config)))


# --- processes ----------------------------------------------------------------------------


class Children:
    """Every child process a benchmark starts, stopped in reverse order by :meth:`stop_all`
    (the CLI calls it in a ``finally``, also on Ctrl-C and SIGTERM)."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, child: Any) -> Any:
        self.items.append(child)
        return child

    def stop(self, child: Any) -> None:
        with contextlib.suppress(Exception):
            child.stop()
        if child in self.items:
            self.items.remove(child)

    def stop_all(self) -> None:
        while self.items:
            self.stop(self.items[-1])


CHILDREN = Children()


def python_process(module: str, log: Path, env: dict[str, str], *args: str) -> Process:
    """``python -m module args`` with the repository importable, as a tracked child."""
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    return Process([sys.executable, "-m", module, *args], log, full)


def poll_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> float:
    """Poll ``check``; return the wall-clock time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB (from /proc/<pid>/status)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT,
        check=False,
    ).stdout  # fmt: skip
    return {
        "uptime": uptime.strip(), "loadavg": list(os.getloadavg()), "cpus": os.cpu_count(),
        "commit": commit.strip(), "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
