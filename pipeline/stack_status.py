"""Live progress of ``touchpoint up``: what runs, how much arrived, how fresh it is."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.processes import ProcessGroup
from pipeline.settings import Settings

REFRESH_SECONDS = 2.0
FRESHNESS_SQL = """
SELECT count(), countIf(ingested_at > now64(3) - INTERVAL 10 SECOND),
       quantileIf(0.5)(dateDiff('millisecond', produced_at, ingested_at),
                       ingested_at > now64(3) - INTERVAL 10 SECOND) / 1000,
       quantileIf(0.95)(dateDiff('millisecond', produced_at, ingested_at),
                        ingested_at > now64(3) - INTERVAL 10 SECOND) / 1000
FROM touchpoints
"""


@dataclass(frozen=True)
class Snapshot:
    rows: int
    rate: float
    visible_p50: float
    visible_p95: float
    dead_letters: int


def snapshot(client: Any) -> Snapshot:
    rows, recent, p50, p95 = client.query(FRESHNESS_SQL).result_rows[0]
    dead = client.query("SELECT count() FROM dead_letters").result_rows[0][0]
    nan = p50 != p50  # NaN check: no rows in the window
    return Snapshot(
        int(rows), recent / 10.0, 0.0 if nan else float(p50), 0.0 if nan else float(p95), int(dead)
    )


def worker_health(host: str, port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=1) as resp:
            return "ok" if resp.status == 200 else "failing"
    except OSError as exc:
        return "failing" if "503" in str(exc) else "starting"


def render(snap: Snapshot | None, group: ProcessGroup, health: dict[int, str]) -> Table:
    table = Table(title="touchpoint up", show_header=False)
    for child in group.children:
        table.add_row(
            child.name,
            "[green]running"
            if child.alive
            else f"[red]exited ({child.process.returncode}) see {child.log_path}",
        )
    for port, status in health.items():
        table.add_row(f"worker :{port} health", status)
    if snap is not None:
        table.add_row("rows in touchpoints", f"{snap.rows:,}")
        table.add_row("events/s (last 10 s)", f"{snap.rate:,.0f}")
        table.add_row(
            "produce -> visible p50 / p95", f"{snap.visible_p50:.2f} s / {snap.visible_p95:.2f} s"
        )
        table.add_row("dead letters", f"{snap.dead_letters:,}")
    return table


def restart_dead_workers(group: ProcessGroup, console: Console) -> None:
    """A worker that exited (it fail-stops rather than lose data) is started again."""
    for child in group.dead():
        if child.name.startswith("worker-"):
            console.print(
                f"[yellow]{child.name} exited ({child.process.returncode}); restarting, see {child.log_path}"
            )
            group.restart(child)


def watch(settings: Settings, group: ProcessGroup, ports: list[int]) -> None:
    """Refresh the status table until interrupted."""
    client = connect(ClickHouseConfig.from_settings(settings))
    console = Console()
    with Live(console=console, refresh_per_second=1, transient=False) as live:
        while True:
            try:
                snap: Snapshot | None = snapshot(client)
            except Exception:  # ClickHouse briefly busy: keep the last view
                snap = None
            restart_dead_workers(group, console)
            health = {p: worker_health(settings.worker_web_host, p) for p in ports}
            live.update(render(snap, group, health))
            time.sleep(REFRESH_SECONDS)
