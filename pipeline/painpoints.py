"""Pain points: touchpoint kinds ranked by the lift in drop-off of the journeys that met them.

The numbers come from the ClickHouse views of ``schemas/clickhouse/0006_painpoints.sql``
(definitions in ``docs/painpoints.md``): per kind (stage x channel x event type x bucketed
property), the journeys whose stay at that stage is decided, split by whether they met the
kind there, with their drop-off at that stage. :func:`rank_painpoints` reads the ranking,
:func:`painpoints_feed` gives it as JSON-able rows (the dashboard's data feed), and the pure
interval functions below compute exactly what the view computes, for checks and tests.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError
from pydantic import BaseModel, ConfigDict

from pipeline.chclient import translate
from pipeline.stage_model_table import read_stage_model

Z95 = 1.959963984540054
"""The standard normal quantile of 0.975: two-sided 95% intervals."""
DEFAULT_MIN_JOURNEYS = 30
DEFAULT_LIMIT = 20


# --- the intervals (pure; the view computes the same) --------------------------------------
def katz_interval(
    dropped_with: int, journeys_with: int, dropped_without: int, journeys_without: int,
    z: float = Z95,
) -> tuple[float, float]:  # fmt: skip
    """Katz's log interval of the relative risk (with / without). When either dropped count
    is 0, 0.5 is added to each of the four cells (Haldane-Anscombe)."""
    a, n1 = float(dropped_with), float(journeys_with)
    c, n0 = float(dropped_without), float(journeys_without)
    if a == 0 or c == 0:
        a, c, n1, n0 = a + 0.5, c + 0.5, n1 + 1, n0 + 1
    se = math.sqrt(1 / a - 1 / n1 + 1 / c - 1 / n0)
    centre = math.log((a / n1) / (c / n0))
    return math.exp(centre - z * se), math.exp(centre + z * se)


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval of the proportion ``k / n``."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def newcombe_interval(
    dropped_with: int, journeys_with: int, dropped_without: int, journeys_without: int,
    z: float = Z95,
) -> tuple[float, float]:  # fmt: skip
    """Newcombe's hybrid score interval of the difference of the two drop-off rates
    (with - without), from the Wilson intervals of each."""
    p1, p0 = dropped_with / journeys_with, dropped_without / journeys_without
    l1, u1 = wilson_interval(dropped_with, journeys_with, z)
    l0, u0 = wilson_interval(dropped_without, journeys_without, z)
    d = p1 - p0
    return d - math.hypot(p1 - l1, u0 - p0), d + math.hypot(u1 - p1, p0 - l0)


# --- the ranking ---------------------------------------------------------------------------
class Painpoint(BaseModel):
    """One touchpoint kind at one stage and the drop-off of the journeys that met it there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str
    channel: str
    event_type: str
    property: str
    """'' for the event type as a whole."""
    bucket: str
    journeys_with: int
    """Decided journeys that met the kind while at the stage."""
    dropped_with: int
    journeys_without: int
    """Decided journeys at the stage that did not meet it."""
    dropped_without: int
    dropoff_with: float
    dropoff_without: float | None
    lift: float | None
    """dropoff_with / dropoff_without (None when no journey without it dropped off)."""
    lift_low: float | None
    lift_high: float | None
    difference: float | None
    difference_low: float | None
    difference_high: float | None
    lift_within_type: float | None
    """Against the journeys that met the same event type at the stage with another value of
    the property (None for an event type as a whole)."""
    lift_within_type_low: float | None
    lift_within_type_high: float | None

    def kind(self) -> str:
        """``channel/event_type``, then ``property bucket`` if any."""
        base = f"{self.channel}/{self.event_type}"
        return f"{base} {self.property} {self.bucket}" if self.property else base


class StageCoverage(BaseModel):
    """How many journeys at a stage are decided and so count in the ranking."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: str
    timeout_seconds: float | None
    journeys: int
    """Current journeys that have been at the stage."""
    decided: int
    """Of those, the ones whose timeout at the stage has passed (they count)."""
    dropped_off: int


class Ranking(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    watermark: datetime | None
    """The newest event time: "now" for every timeout."""
    min_journeys: int
    stages: tuple[StageCoverage, ...] = ()
    painpoints: tuple[Painpoint, ...] = ()


COLUMNS = tuple(Painpoint.model_fields)
_COUNTS = ("journeys", "decided", "dropped_off")
_ORDER = "lift DESC, journeys_with DESC, stage, channel, event_type, property, bucket"


def _query(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> Any:
    try:
        return client.query(sql, parameters=parameters)
    except DriverError as exc:
        raise translate(exc, stage="painpoints") from exc


def rank_painpoints(
    client: Client,
    *,
    min_journeys: int = DEFAULT_MIN_JOURNEYS,
    limit: int = DEFAULT_LIMIT,
    stage: str | None = None,
) -> Ranking:
    """The kinds met by at least ``min_journeys`` decided journeys (and not met by as many),
    highest lift first, at most ``limit`` (0: all); only ``stage``'s if given. As in the
    ``painpoints`` view, a property value held by every journey with its event type at the
    stage is left out (it repeats the event type's row)."""
    where = (
        "journeys_with >= %(min)s AND journeys_without >= %(min)s AND lift IS NOT NULL"
        " AND (property = '' OR type_journeys_without > 0)"
    )
    parameters: dict[str, Any] = {"min": int(min_journeys)}
    if stage is not None:
        where += " AND stage = %(stage)s"
        parameters["stage"] = stage
    tail = f" LIMIT {int(limit)}" if limit > 0 else ""
    sql = f"SELECT {', '.join(COLUMNS)} FROM painpoint_stats WHERE {where} ORDER BY {_ORDER}{tail}"
    result = _query(client, sql, parameters)
    rows = tuple(
        Painpoint(**{k: _finite(v) for k, v in zip(COLUMNS, row, strict=True)})
        for row in result.result_rows
    )
    return Ranking(
        watermark=_watermark(client),
        min_journeys=min_journeys,
        stages=coverage(client),
        painpoints=rows,
    )


def coverage(client: Client) -> tuple[StageCoverage, ...]:
    """Per configured stage: journeys that have been there, how many are decided, dropped."""
    counts = {
        row[0]: row[1:]
        for row in _query(
            client,
            "SELECT stage, count(), countIf(window_closed), "
            "countIf(window_closed AND outcome = 'dropped_off') FROM stage_outcomes GROUP BY stage",
        ).result_rows
    }
    return tuple(
        StageCoverage(
            stage=s.stage,
            timeout_seconds=s.timeout_seconds,
            **dict(zip(_COUNTS, counts.get(s.stage, (0, 0, 0)), strict=True)),
        )
        for s in read_stage_model(client)
    )


def _watermark(client: Client) -> datetime | None:
    sql = "SELECT if(count() = 0, NULL, least(max(occurred_at), now64(3, 'UTC'))) FROM touchpoints"
    value = _query(client, sql).result_rows[0][0]
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _finite(value: Any) -> Any:
    """NaN and infinities (from empty groups) become None."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def painpoints_feed(
    client: Client, *, min_journeys: int = DEFAULT_MIN_JOURNEYS, limit: int = DEFAULT_LIMIT
) -> list[dict[str, Any]]:
    """The ranking as JSON-able rows (the dashboard's feed): rank, kind and every column."""
    ranking = rank_painpoints(client, min_journeys=min_journeys, limit=limit)
    return [
        {"rank": i, "kind": p.kind(), **p.model_dump()} for i, p in enumerate(ranking.painpoints, 1)
    ]


__all__ = [
    "Painpoint",
    "Ranking",
    "StageCoverage",
    "coverage",
    "katz_interval",
    "newcombe_interval",
    "painpoints_feed",
    "rank_painpoints",
    "wilson_interval",
]
