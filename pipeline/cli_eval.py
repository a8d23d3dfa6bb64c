"""Evaluation commands: ``touchpoint eval stitching``.

Registers the ``eval`` group on :data:`pipeline.cli.cli` when imported.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli import ClickHouseURL, Database, eval_app, flag, settings_from
from pipeline.errors import TouchpointError
from pipeline.eval_stitching import VIEWS, StitchingReport, ViewReport
from pipeline.stitching_eval import StitchingScore

_SCORES: list[tuple[str, str]] = [
    ("events scored", "items"),
    ("B-cubed precision", "bcubed_precision"),
    ("B-cubed recall", "bcubed_recall"),
    ("B-cubed F1", "bcubed_f1"),
    ("pairwise precision", "pairwise_precision"),
    ("pairwise recall", "pairwise_recall"),
    ("pairwise F1", "pairwise_f1"),
    ("clusters", "predicted_clusters"),
    ("largest cluster (events)", "largest_cluster"),
    ("clusters with >1 true customer", "impure_clusters"),
    ("true customers split", "split_persons"),
    ("clusters with 2 crm_ids", "crm_conflicts"),
]


@eval_app.command("stitching")
def stitching(
    truth: Annotated[
        Path,
        flag(
            "eval_stitching",
            "truth",
            "Ground truth (JSONL) written by `touchpoint simulate --truth`.",
            "--truth",
        ),
    ],
    clickhouse_url: ClickHouseURL = None,
    database: Database = None,
    as_json: Annotated[
        bool, flag("eval_stitching", "json", "Print JSON instead of tables.", "--json")
    ] = False,
    squash: Annotated[
        bool,
        flag(
            "eval_stitching",
            "squash",
            "Run pipeline.identity_ops.squash (rewrites touchpoints) and score it too.",
            "--squash",
        ),
    ] = False,
    min_precision: Annotated[
        float | None,
        flag(
            "eval_stitching",
            "min_precision",
            "Exit 1 if B-cubed precision after overrides is below this.",
            "--min-precision",
        ),
    ] = None,
) -> None:
    """Score identity stitching in ClickHouse against a simulation's ground truth.

    Joins by event_id (valid events of the truth that ClickHouse holds) and prints B-cubed
    and pairwise precision, recall and F1, the largest cluster, mixed clusters, split
    customers, clusters with two crm_ids and clusters over the guardrail caps, for three
    views: as stamped, after the identity overrides, and after a squash (with --squash).
    Bounds: the best achievable recall links only identifiers that truly belong to one
    person; one cluster per distinct identifier set gives the highest precision any
    resolver can reach (people sharing the very same identifiers cannot be told apart).

    Exit code 0; 1 if --min-precision is given and not met; 2 if the truth file or
    ClickHouse cannot be read.
    """
    from clickhouse_connect.driver.exceptions import Error as DriverError

    from pipeline.chclient import ClickHouseConfig, connect
    from pipeline.eval_stitching_io import evaluate_stitching

    settings = settings_from(clickhouse_url=clickhouse_url, clickhouse_database=database)
    key = settings.pii_hash_key.get_secret_value().encode()
    err = Console(stderr=True)
    try:
        client = connect(ClickHouseConfig.from_settings(settings))
        report = evaluate_stitching(
            client,
            settings.clickhouse_database,
            truth,
            key if settings.pii_mode == "hash" else None,
            squash=squash,
        )
    except (OSError, ValueError, TouchpointError, DriverError) as exc:
        err.print(f"touchpoint eval stitching: {exc}", style="red", markup=False)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        render(report, Console())
    precision = _target_precision(report)
    if min_precision is not None and (precision is None or precision < min_precision):
        err.print(f"B-cubed precision after overrides {precision} is below {min_precision}")
        raise typer.Exit(1)


def _target_precision(report: StitchingReport) -> float | None:
    score = report.view("current").score
    return score.bcubed_precision if score is not None else None


def _cell(score: StitchingScore | None, field: str) -> str:
    if score is None:
        return "n/a"
    value = getattr(score, field)
    return f"{value:.4f}" if isinstance(value, float) else f"{value:,}"


def _extra_rows(views: list[ViewReport]) -> list[tuple[str, list[str]]]:
    def each(fmt: str, get: Callable[[ViewReport], object]) -> list[str]:
        return [fmt.format(get(v)) if v.available else "n/a" for v in views]

    rows = [
        ("B-cubed precision, attributable", each("{:.4f}", _attributable("bcubed_precision"))),
        ("B-cubed recall, attributable", each("{:.4f}", _attributable("bcubed_recall"))),
        ("most true customers in a cluster", each("{:,}", lambda v: v.most_persons)),
        ("clusters over the caps", each("{:,}", lambda v: v.over_caps)),
        ("recall gap to best achievable", each("{:.4f}", lambda v: v.recall_gap)),
    ]
    kinds = next((list(v.most_held) for v in views if v.available), [])
    for kind in kinds:
        rows.append((f"most {kind} in a cluster", each("{:,}", _held(kind))))
    return rows


def _held(kind: str) -> Callable[[ViewReport], object]:
    return lambda view: view.most_held[kind]


def _attributable(field: str) -> Callable[[ViewReport], object]:
    return lambda view: getattr(view.attributable, field)


def render(report: StitchingReport, console: Console) -> None:
    """The report as rich tables: the views side by side, the targets, the counts."""
    c = report.counts
    console.print(
        f"truth {report.truth}: {c.truth_valid:,} valid events; ClickHouse {report.database}: "
        f"{c.stored:,} events, {c.joined:,} joined, {c.missing:,} missing, "
        f"{c.not_in_truth:,} not in the truth, {c.unknown_nodes:,} unknown identifiers"
    )
    table = Table(title="identity stitching")
    table.add_column("metric")
    for view in report.views:
        table.add_column(VIEWS[view.name], justify="right")
    table.add_column("best achievable", justify="right")
    table.add_column("identifier sets", justify="right")
    for label, field in _SCORES:
        cells = [_cell(v.score, field) for v in report.views]
        table.add_row(label, *cells, _cell(report.best, field), _cell(report.ceiling, field))
    for label, cells in _extra_rows(report.views):
        table.add_row(label, *cells, "", "")
    console.print(table)
    console.print(
        f"best achievable: links only identifiers truly of one person (recall ceiling); "
        f"identifier sets: one cluster per distinct identifier set (precision ceiling of "
        f"identifier-only rules, which shared lines can pass: "
        f"{report.ceiling.bcubed_precision:.4f}); attributable: the {c.attributable:,} events "
        f"carrying an identifier truly of their person"
    )
    for view in report.views:
        if not view.available:
            console.print(f"{view.title}: not available ({view.reason})")
    if report.squash is not None:
        console.print(f"squash: {report.squash}")
    targets = Table(title="targets (after overrides)")
    for column in ("check", "target", "value", "ok"):
        targets.add_column(column)
    for check in report.checks:
        ok = "[green]yes[/green]" if check.ok else "[red]NO[/red]"
        targets.add_row(check.name, check.target, check.value, ok)
    console.print(targets)
    console.print(f"evaluated in {report.seconds:.1f}s")
