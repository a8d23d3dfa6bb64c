"""The ``stage_model`` table: the configured stage model, as ClickHouse rows.

The pain-point views (``schemas/clickhouse/0006_painpoints.sql``) need each stage's order and
drop-off timeout in SQL. :func:`write_stage_model` writes one row per stage, all with one new
``version``; the views read the rows of the highest version, so a stage removed from the
configuration disappears with the next write. ``touchpoint migrate`` calls it after applying
the migrations (:func:`pipeline.migrate.migrate`); it writes only when the model differs from
the stored one, so repeated migrations leave the table as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

from pipeline.chclient import translate
from pipeline.stage_model import StageModel

TABLE = "stage_model"
COLUMNS = ("stage", "rank", "timeout_seconds", "completed_by", "is_last", "source", "version")


@dataclass(frozen=True, slots=True)
class StageRow:
    """One stage as stored: its place in the funnel, timeout and completing events."""

    stage: str
    rank: int
    timeout_seconds: float | None
    """None: the stage never drops off."""
    completed_by: tuple[str, ...]
    """``channel/event_type`` kinds that complete the stage, sorted."""
    is_last: bool


def stage_rows(model: StageModel) -> tuple[StageRow, ...]:
    """The rows that describe ``model``, in funnel order."""
    completed: dict[str, list[str]] = {stage: [] for stage in model.stages}
    for (channel, event_type), stages in model.completes.items():
        for stage in stages:
            completed[stage].append(f"{channel}/{event_type}")
    last = len(model.stages) - 1
    return tuple(
        StageRow(
            stage=stage,
            rank=rank,
            timeout_seconds=_seconds(model, stage),
            completed_by=tuple(sorted(completed[stage])),
            is_last=rank == last,
        )
        for rank, stage in enumerate(model.stages)
    )


def _seconds(model: StageModel, stage: str) -> float | None:
    timeout = model.timeouts.get(stage)
    return None if timeout is None else timeout.total_seconds()


def read_stage_model(client: Any) -> tuple[StageRow, ...]:
    """The stored model (rows of the highest version), in funnel order; empty if none."""
    sql = (
        f"SELECT stage, rank, timeout_seconds, completed_by, is_last FROM {TABLE} FINAL "
        f"WHERE version = (SELECT max(version) FROM {TABLE}) ORDER BY rank"
    )
    try:
        rows = client.query(sql).result_rows
    except DriverError as exc:
        raise translate(exc, stage="stage model") from exc
    return tuple(
        StageRow(str(s), int(r), None if t is None else float(t), tuple(sorted(c)), bool(last))
        for s, r, t, c, last in rows
    )


def write_stage_model(client: Any, model: StageModel, *, force: bool = False) -> bool:
    """Store ``model`` as the current stage model; returns whether rows were written.

    Nothing is written when the stored model already equals it (unless ``force``). The new
    version is the current time in milliseconds, and above any stored version.
    """
    rows = stage_rows(model)
    if not force and read_stage_model(client) == rows:
        return False
    try:
        stored = client.query(f"SELECT max(version) FROM {TABLE}").result_rows[0][0]
        version = max(time.time_ns() // 1_000_000, int(stored or 0) + 1)
        data = [
            [r.stage, r.rank, r.timeout_seconds, list(r.completed_by), int(r.is_last),
             model.source, version]
            for r in rows
        ]  # fmt: skip
        client.insert(TABLE, data, column_names=list(COLUMNS))
    except DriverError as exc:
        raise translate(exc, stage="stage model") from exc
    return True


__all__ = ["StageRow", "read_stage_model", "stage_rows", "write_stage_model"]
