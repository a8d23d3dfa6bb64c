"""``touchpoint painpoints``: the pain-point ranking as a table or JSON.

Registers the command on :data:`pipeline.cli.cli` when imported.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli import ClickHouseURL, Database, cli, flag, settings_from
from pipeline.painpoints import (
    DEFAULT_LIMIT,
    DEFAULT_MIN_JOURNEYS,
    Painpoint,
    Ranking,
    StageCoverage,
    rank_painpoints,
)


class Format(StrEnum):
    table = "table"
    json = "json"


@cli.command("painpoints")
def painpoints(
    clickhouse_url: ClickHouseURL = None,
    database: Database = None,
    min_journeys: Annotated[
        int,
        flag(
            "painpoints",
            "min_journeys",
            "Least decided journeys with the kind, and without it, to be ranked.",
            "--min-journeys",
        ),
    ] = DEFAULT_MIN_JOURNEYS,
    limit: Annotated[
        int, flag("painpoints", "limit", "Rows shown (0: all).", "--limit")
    ] = DEFAULT_LIMIT,
    stage: Annotated[
        str | None, flag("painpoints", "stage", "Only kinds met at this stage.", "--stage")
    ] = None,
    output: Annotated[
        Format, flag("painpoints", "format", "table, or json (the ranking model).", "--format")
    ] = Format.table,
) -> None:
    """Rank touchpoint kinds by the lift in drop-off of the journeys that met them.

    A kind is a stage x channel x event type, alone or with one bucketed property
    (wait_seconds, duration_seconds, csat, nps, rating, sentiment, resolved, outcome, topic,
    queue, bounce_type). Only journeys whose stay at the stage is decided count: the stage's
    drop-off timeout has passed since they entered it (so a stage with a 7-day timeout has
    no decided journeys in a shorter history). Lift: drop-off at the stage of the journeys
    that met the kind there, over that of the other decided journeys at the stage, with a
    95% interval (Katz); difference with Newcombe's interval. See docs/painpoints.md.

    Exit code 0; 2 if ClickHouse cannot be read.
    """
    from clickhouse_connect.driver.exceptions import Error as DriverError

    from pipeline.chclient import ClickHouseConfig, connect
    from pipeline.errors import TouchpointError

    if min_journeys < 1 or limit < 0:
        raise typer.BadParameter("--min-journeys must be at least 1 and --limit at least 0")
    settings = settings_from(clickhouse_url=clickhouse_url, clickhouse_database=database)
    try:
        client = connect(ClickHouseConfig.from_settings(settings))
        ranking = rank_painpoints(client, min_journeys=min_journeys, limit=limit, stage=stage)
    except (TouchpointError, DriverError) as exc:
        Console(stderr=True).print(f"touchpoint painpoints: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    if output is Format.json:
        typer.echo(ranking.model_dump_json(indent=2))
    else:
        render(ranking, Console())


def duration(seconds: float | None) -> str:
    """``7d``, ``30m``, ``90s``; ``none`` for no timeout."""
    if seconds is None:
        return "none"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _ratio(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "n/a"
    return (
        f"{value:.2f} [{low:.2f}, {high:.2f}]"
        if low is not None and high is not None
        else f"{value:.2f}"
    )


def _points(value: float | None, low: float | None, high: float | None) -> str:
    if value is None or low is None or high is None:
        return "n/a"
    return f"{value * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


_TEXT = frozenset({"stage", "touchpoint", "property"})


def _row(rank: int, p: Painpoint) -> list[str]:
    return [
        str(rank),
        p.stage,
        f"{p.channel}/{p.event_type}",
        f"{p.property} {p.bucket}" if p.property else "(any)",
        f"{p.dropped_with:,}/{p.journeys_with:,}",
        _rate(p.dropoff_with),
        _rate(p.dropoff_without),
        _ratio(p.lift, p.lift_low, p.lift_high),
        _points(p.difference, p.difference_low, p.difference_high),
        _ratio(p.lift_within_type, p.lift_within_type_low, p.lift_within_type_high),
    ]


def _coverage(stage: StageCoverage) -> str:
    return (
        f"{stage.stage} {stage.decided:,} of {stage.journeys:,} "
        f"(timeout {duration(stage.timeout_seconds)})"
    )


def render(ranking: Ranking, console: Console) -> None:
    """The ranking as a rich table, with the watermark and the decided journeys per stage."""
    table = Table(title=f"pain points (at least {ranking.min_journeys} journeys with and without)")
    headers = ("#", "stage", "touchpoint", "property", "dropped/journeys", "drop-off with",
               "without", "lift [95% CI]", "difference, points [95% CI]", "lift within type")  # fmt: skip
    for header in headers:
        table.add_column(header, justify="left" if header in _TEXT else "right")
    for rank, p in enumerate(ranking.painpoints, 1):
        table.add_row(*_row(rank, p))
    console.print(table)
    when = ranking.watermark.isoformat() if ranking.watermark else "no events yet"
    console.print(f"watermark (newest event time): {when}")
    console.print("decided journeys per stage: " + "; ".join(map(_coverage, ranking.stages)))
    waiting = [s.stage for s in ranking.stages if s.journeys and not s.decided]
    never = [s.stage for s in ranking.stages if s.timeout_seconds is None]
    if [s for s in waiting if s not in never]:
        console.print(
            "not ranked yet (no stay there has outlived the stage's timeout): "
            + ", ".join(s for s in waiting if s not in never)
        )
    if never:
        console.print(f"never ranked (no timeout, so no drop-off): {', '.join(never)}")
    if not ranking.painpoints:
        console.print("no kind has enough decided journeys yet (try --min-journeys lower)")
