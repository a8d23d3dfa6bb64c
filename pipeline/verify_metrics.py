"""``touchpoint verify metrics``: recompute the final windows from ``stage_transitions`` in
SQL and compare them with ``stage_metrics`` (plus the ``late_events`` that reached them
after they were final). The definitions are those of :mod:`pipeline.stage_metrics`,
written independently in SQL.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from pipeline.stage_model import StageModel

MEASURES = ("entries", "conversions", "dropoffs")
WINDOW = 60
"""Seconds in a window."""
WKey = tuple[int, str, str, str]
Counts = dict[WKey, dict[str, int]]

MEASURE_ITEMS = """
    SELECT stage, channel, segment, at, conv_at, timeout_s, converted,
        arrayJoin([
            ('entries', at, 1),
            ('conversions', conv_at, converted),
            ('dropoffs', at + toIntervalMillisecond(toInt64(timeout_s * 1000)),
             NOT converted AND timeout_s >= 0)
        ]) AS m,
        m.1 AS measure, m.2 AS t
    FROM (
        SELECT r.1 AS stage, r.3 AS at, r.4 AS channel, k.customer_id AS customer_id,
            arrayFilter(x -> x.2 > r.2, k.rows) AS later,
            if(empty(later), NULL, greatest(r.3, arrayMin(x -> x.3, later))) AS later_at,
            if(isNull(r.5), later_at,
               if(isNull(later_at), greatest(r.3, assumeNotNull(r.5)),
                  least(assumeNotNull(later_at), greatest(r.3, assumeNotNull(r.5))))) AS conv_at,
            timeouts[r.2] AS timeout_s,
            conv_at IS NOT NULL AND (timeout_s < 0
                OR dateDiff('millisecond', at, assumeNotNull(conv_at)) <= timeout_s * 1000)
                AS converted,
            ifNull(nullIf(c.segment, ''), 'unknown') AS segment
        FROM (
            SELECT customer_id, journey_id,
                groupArray((to_stage, indexOf(stages, to_stage), at, channel, completed_at)) AS rows
            FROM stage_transitions FINAL
            WHERE is_deleted = 0 AND indexOf(stages, to_stage) > 0
            GROUP BY customer_id, journey_id
        ) AS k
        ARRAY JOIN k.rows AS r
        LEFT JOIN (SELECT customer_id, segment FROM customers FINAL WHERE is_deleted = 0) AS c
            ON c.customer_id = k.customer_id
    )
    WHERE m.3
"""
"""One row per measure (``entries``, ``conversions``, ``dropoffs``) a journey's stage entry
contributes, at its time ``t``, from ``stage_transitions`` and ``customers`` (the segment);
``stages`` and ``timeouts`` (seconds, -1: none) come from the enclosing query's WITH."""
WITH_MODEL = "WITH {stages:Array(String)} AS stages, {timeouts:Array(Float64)} AS timeouts"
_RECOMPUTE = f"""
{WITH_MODEL}
SELECT toUnixTimestamp(toStartOfMinute(t)) AS w, stage, channel, segment, measure, count() AS n
FROM ({MEASURE_ITEMS})
WHERE toStartOfMinute(t) >= {{start:DateTime64(3, 'UTC')}}
  AND toStartOfMinute(t) < {{end:DateTime64(3, 'UTC')}}
GROUP BY w, stage, channel, segment, measure
"""
_STORED = """
SELECT toUnixTimestamp(window_start), stage, channel, segment, entries, conversions, dropoffs
FROM stage_metrics FINAL
WHERE is_final = 1 AND channel != 'all' AND segment != 'all'
  AND window_start >= {start:DateTime64(3, 'UTC')} AND window_start < {end:DateTime64(3, 'UTC')}
"""
_LATE = """
SELECT toUnixTimestamp(window_start), stage, channel, segment, measure, sum(delta)
FROM late_events FINAL
WHERE window_start >= {start:DateTime64(3, 'UTC')} AND window_start < {end:DateTime64(3, 'UTC')}
GROUP BY 1, 2, 3, 4, 5
"""
_FINAL_UNTIL = "SELECT toUnixTimestamp(max(window_end)) FROM stage_metrics WHERE is_final = 1"


@dataclass
class Report:
    start: datetime
    end: datetime
    final_until: datetime | None
    windows: int = 0
    """Final windows compared (per stage, channel and segment)."""
    totals: dict[str, int] = field(default_factory=dict)
    late: int = 0
    mismatches: list[tuple[WKey, str, int, int]] = field(default_factory=list)
    """(window, measure, stored + late, recomputed)."""

    @property
    def ok(self) -> bool:
        return not self.mismatches


def model_params(model: StageModel) -> dict[str, Any]:
    """The ``stages`` and ``timeouts`` parameters of :data:`MEASURE_ITEMS`."""
    timeouts = [t.total_seconds() if t else -1.0 for t in (model.timeouts[s] for s in model.stages)]
    return {"stages": list(model.stages), "timeouts": timeouts}


def verify(client: Client, model: StageModel, start: datetime, end: datetime) -> Report:
    """Compare the final windows that start in [start, end) (whole windows on both sides:
    a ``start`` inside a window leaves that window out of the stored and the recomputed
    counts alike)."""
    until = client.query(_FINAL_UNTIL).result_rows[0][0]
    final_until = datetime.fromtimestamp(until, UTC) if until else None
    report = Report(start, end, final_until)
    if final_until is None:
        return report
    # whole windows only: the stored and late rows are selected by window start, the
    # recomputation by event time; an unaligned bound would cut a window in one of them
    start, end = _minute(start), min(_minute(end, up=True), final_until)
    params: dict[str, Any] = {"start": start, "end": end}
    stored = _stored(client, params)
    late = _late(client, params)
    report.late = sum(abs(n) for c in late.values() for n in c.values())
    params |= model_params(model)
    recomputed: Counts = defaultdict(lambda: dict.fromkeys(MEASURES, 0))
    for w, stage, channel, segment, measure, n in client.query(
        _RECOMPUTE, parameters=params
    ).result_rows:
        recomputed[(w, stage, channel, segment)][measure] = n
    keys = set(stored) | set(recomputed) | set(late)
    report.windows = len(keys)
    report.totals = {m: sum(recomputed[k][m] for k in keys) for m in MEASURES}
    for key in sorted(keys):
        for m in MEASURES:
            mine = stored.get(key, {}).get(m, 0) + late.get(key, {}).get(m, 0)
            if mine != recomputed[key][m]:
                report.mismatches.append((key, m, mine, recomputed[key][m]))
    return report


def _minute(at: datetime, up: bool = False) -> datetime:
    """``at`` rounded down (or up) to a window start (1-minute windows, UTC)."""
    seconds = at.timestamp()
    whole = (-(-seconds // WINDOW) if up else seconds // WINDOW) * WINDOW
    return datetime.fromtimestamp(whole, UTC)


def _stored(client: Client, params: dict[str, Any]) -> Counts:
    out: Counts = {}
    for w, stage, channel, segment, *values in client.query(_STORED, parameters=params).result_rows:
        out[(w, stage, channel, segment)] = dict(zip(MEASURES, values, strict=True))
    return out


def _late(client: Client, params: dict[str, Any]) -> Counts:
    out: Counts = defaultdict(dict)
    for w, stage, channel, segment, measure, n in client.query(
        _LATE, parameters=params
    ).result_rows:
        out[(w, stage, channel, segment)][measure] = int(n)
    return out
