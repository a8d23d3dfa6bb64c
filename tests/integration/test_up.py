"""``touchpoint up``: everything starts, events arrive within seconds, Ctrl-C leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from pipeline.testing import free_port
from pipeline.testing.stack import wait_for


def _processes_with(marker: str) -> list[int]:
    """PIDs whose environment mentions ``marker`` (the test's unique data dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _json(url: str) -> object:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return orjson.loads(resp.read())
    except OSError:
        return None


def test_up_runs_everything_and_ctrl_c_stops_all(tmp_path: Path) -> None:
    data_dir = tmp_path / "up-data"
    ports = {name: free_port() for name in ("kafka", "ch", "dash", "worker", "collector")}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")},
        "TOUCHPOINT_WORKER_WEB_PORT": str(ports["worker"]),
        "TOUCHPOINT_COLLECTOR_PORT": str(ports["collector"]),
        "TOUCHPOINT_PARTITIONS": "3",
    }
    argv = [
        sys.executable, "-m", "pipeline.cli", "up", "--data-dir", str(data_dir),
        "--bootstrap", f"127.0.0.1:{ports['kafka']}",
        "--clickhouse-url", f"http://127.0.0.1:{ports['ch']}",
        "--dashboard-port", str(ports["dash"]), "--demo-rate", "100",
    ]  # fmt: skip
    out = tmp_path / "up.out"
    started = time.monotonic()
    with open(out, "wb") as log:
        up = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        summary_url = f"http://127.0.0.1:{ports['dash']}/api/summary"

        def events_visible() -> int:
            data = _json(summary_url)
            if not isinstance(data, dict) or "totals" not in data:
                assert up.poll() is None, out.read_text()
                return 0
            return int(data["totals"][0]["events"])

        wait_for(events_visible, 150, "simulated events in ClickHouse via the dashboard API")
        first_seen = time.monotonic() - started
        text = out.read_text()
        for expected in ("broker: embedded Tansu", "clickhouse: embedded chDB", "dashboard: http://"):
            assert expected in text
        health = _json(f"http://127.0.0.1:{ports['worker']}/healthz")
        assert health == {"status": "ok", "problems": []}
        assert len(_processes_with(str(data_dir))) >= 4  # chserver, worker, dashboard, simulator
        print(f"touchpoint up: first events visible {first_seen:.1f}s after start")
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(120) == 0, out.read_text()[-3000:]  # 60 s was not enough under load
    assert "stopped; no process left running" in out.read_text()
    time.sleep(0.5)
    assert _processes_with(str(data_dir)) == []
    assert not _json(summary_url)
