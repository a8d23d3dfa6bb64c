"""Stage-metrics commands: ``touchpoint verify metrics`` and ``touchpoint eval alerts``.

Registers the ``verify`` group, and ``alerts`` on the ``eval`` group, when imported.
"""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli import ClickHouseURL, Database, cli, eval_app, flag, settings_from

if TYPE_CHECKING:
    from pipeline.eval_alerts import RunResult
    from pipeline.producers.simulator import SimulationConfig
    from pipeline.stage_metrics import MetricsConfig

verify_app = typer.Typer(
    name="verify", help="Check stored results against an independent recomputation.",
    no_args_is_help=True,
)  # fmt: skip
cli.add_typer(verify_app, name="verify")


def _when(value: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 time") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


@verify_app.command("metrics")
def verify_metrics(
    start: Annotated[
        str, flag("verify_metrics", "from", "First window start (ISO 8601, UTC).", "--from")
    ] = "1970-01-01T00:00:00Z",
    end: Annotated[
        str, flag("verify_metrics", "to", "End of the range (ISO 8601, UTC).", "--to")
    ] = "2999-01-01T00:00:00Z",
    clickhouse_url: ClickHouseURL = None,
    database: Database = None,
) -> None:
    """Recompute the final stage-metric windows from `stage_transitions` in SQL and compare.

    For every final window (per stage, channel and segment) that starts in [--from, --to),
    entries, conversions and drop-offs in `stage_metrics` plus the changes recorded in
    `late_events` must equal the recomputation. Exit 0 when they all do, 1 otherwise.
    """
    from pipeline.chclient import ClickHouseConfig, connect
    from pipeline.stage_model import load_stage_model
    from pipeline.verify_metrics import verify

    settings = settings_from(clickhouse_url=clickhouse_url, clickhouse_database=database)
    model = load_stage_model(settings.stage_model_path)
    client = connect(ClickHouseConfig.from_settings(settings))
    report = verify(client, model, _when(start), _when(end))
    out = Console()
    if report.final_until is None:
        out.print("no final window yet: nothing to verify")
        return
    totals = ", ".join(f"{k} {v}" for k, v in report.totals.items())
    out.print(
        f"{report.windows} final windows up to {report.final_until:%Y-%m-%d %H:%M}Z; "
        f"recomputed {totals}; {report.late} late changes"
    )
    if report.ok:
        out.print("OK: stage_metrics + late_events equal the recomputation", style="green")
        return
    table = Table("window", "stage", "channel", "segment", "measure", "stored+late", "SQL")
    for (w, stage, channel, segment), measure, mine, sql in report.mismatches[:50]:
        at = datetime.fromtimestamp(w, UTC)
        table.add_row(f"{at:%H:%M}", stage, channel, segment, measure, str(mine), str(sql))
    out.print(table)
    out.print(f"{len(report.mismatches)} mismatches", style="red")
    raise typer.Exit(1)


@eval_app.command("alerts")
def eval_alerts(
    runs: Annotated[int, flag("eval_alerts", "runs", "Simulated days.", "--runs")] = 10,
    incidents: Annotated[
        int, flag("eval_alerts", "incidents", "Incidents per day.", "--incidents")
    ] = 2,
    customers: Annotated[
        int, flag("eval_alerts", "customers", "Customers per 6-hour day.", "--customers")
    ] = 20_000,
    seed: Annotated[int, flag("eval_alerts", "seed", "First seed.", "--seed")] = 1,
    quiet_days: Annotated[
        int, flag("eval_alerts", "quiet_days", "Days without incidents.", "--quiet-days")
    ] = 1,
    jobs: Annotated[int, flag("eval_alerts", "jobs", "Days simulated in parallel.", "--jobs")] = 1,
) -> None:
    """Seeded incidents of varied size on simulated 6-hour days (time-compressed, in one
    process through validation, journeys, metrics and the detector): detection delay, missed
    incidents and false alerts per day."""
    from pipeline.metrics_handlers import metrics_config
    from pipeline.stage_model import load_stage_model

    settings = settings_from()
    model = load_stage_model(settings.stage_model_path)
    config = metrics_config(settings, model)
    days = [
        incident_day(seed + i, customers, incidents if i < runs else 0)
        for i in range(runs + quiet_days)
    ]
    results: list[RunResult] = []
    out = Console()
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        path = settings.stage_model_path
        futures = [pool.submit(_run_day, day, path, config) for day in days]
        for future in as_completed(futures):
            results.append(future.result())
            out.print(_day_line(results[-1]))
    out.print(summary_table(results))


def _run_day(day: SimulationConfig, model_path: Path | None, config: MetricsConfig) -> RunResult:
    """One day in a child process (the stage model holds functions: loaded there)."""
    from pipeline.eval_alerts import run
    from pipeline.stage_model import load_stage_model

    return run(day, load_stage_model(model_path), config)


def incident_day(seed: int, customers: int, count: int) -> SimulationConfig:
    """A 6-hour day with ``count`` incidents of random stage-free size at random times."""
    from pipeline.producers.simulator import Incident, SimulationConfig

    rng = random.Random(seed)
    slots = rng.sample(range(90, 330, 60), count) if count else []
    chosen = tuple(
        Incident(
            stage="purchase", start_minute=m + rng.randint(0, 20),
            end_minute=m + 20 + rng.randint(0, 20), dropoff_multiplier=rng.choice((1.6, 2.0, 2.5, 3.0)),
        )
        for m in sorted(slots)
    )  # fmt: skip
    start = datetime(2026, 1, 5, 8, tzinfo=UTC) + timedelta(days=seed)
    return SimulationConfig(
        seed=seed, start=start, duration=timedelta(hours=6), customers=customers, incidents=chosen
    )


def _day_line(r: RunResult) -> str:
    found = [d for d in r.detections if d.fired is not None]
    delays = ", ".join(f"{d.delay_windows:.0f}" for d in found if d.delay_windows is not None)
    return (
        f"seed {r.config.seed}: {r.events} events, {len(r.detections)} incidents, "
        f"{len(found)} detected (delays in windows: {delays or '-'}), "
        f"{len(r.false_alerts)} false alerts"
    )


def summary_table(results: list[RunResult]) -> Table:
    detections = [d for r in results for d in r.detections]
    delays = sorted(d.delay_windows for d in detections if d.delay_windows is not None)
    days = sum(r.simulated_days for r in results) * 4  # in 6-hour days
    false = sum(len(r.false_alerts) for r in results)
    table = Table("measure", "value", title="drop-off spike detection")
    table.add_row("incidents", str(len(detections)))
    table.add_row("detected", str(len(delays)))
    table.add_row("missed", str(len(detections) - len(delays)))
    if delays:
        table.add_row("median delay (windows)", f"{delays[len(delays) // 2]:.1f}")
        table.add_row("max delay (windows)", f"{delays[-1]:.1f}")
    for size in sorted({d.incident.dropoff_multiplier for d in detections}):
        of = [d for d in detections if d.incident.dropoff_multiplier == size]
        found = [f"{d.delay_windows:.0f}" for d in of if d.delay_windows is not None]
        shown = f"{len(found)}/{len(of)}" + (f" (delays {', '.join(found)})" if found else "")
        table.add_row(f"detected at drop-off x{size:g}", shown)
    resolved = sum(1 for d in detections if d.resolved is not None)
    table.add_row("resolved after the incident", str(resolved))
    table.add_row("false alerts", str(false))
    table.add_row("false alerts per simulated 6-hour day", f"{false / max(days, 1e-9):.2f}")
    return table
