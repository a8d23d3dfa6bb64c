"""The dashboard's SQL: its filters, parsed from the request, and one builder per panel.

Every builder returns a :class:`Query`: constant SQL with ClickHouse query parameters
(``{name:Type}``, bound by the server from ``param_<name>``) and the values to bind. User input
only ever travels as a parameter value; it decides at most which constant clause is added.
Definitions of every number are in ``docs/dashboard.md``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from schemas import CHANNELS

RANGES: dict[str, int] = {
    "15m": 900, "1h": 3600, "3h": 10_800, "6h": 21_600, "24h": 86_400, "7d": 604_800,
    "30d": 2_592_000,
}  # fmt: skip
DEFAULT_RANGE = "1h"
STEPS = (60, 300, 600, 900, 1800, 3600, 10_800, 21_600, 86_400)
"""Bucket sizes of the drop-off chart: the smallest giving at most MAX_POINTS points."""
MAX_POINTS = 120
NARROW_SECONDS = 86_400
"""Ranges up to a day read the experience panel's customers only (see :func:`experience`)."""
_SEGMENT = re.compile(r"^[\w .\-]{1,64}$")


class Query(NamedTuple):
    name: str
    sql: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Filters:
    """A time range ``[start, end)`` in event time (whole minutes, UTC), a channel and a
    segment (``""``: all)."""

    start: datetime
    end: datetime
    range_name: str = DEFAULT_RANGE
    channel: str = ""
    segment: str = ""

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    @property
    def step(self) -> int:
        """Seconds per point of the drop-off chart."""
        want = math.ceil(self.seconds / MAX_POINTS)
        return next((s for s in STEPS if s >= want), STEPS[-1])

    def params(self) -> dict[str, Any]:
        """The values every query may bind: the range, and the metric rows' channel and
        segment (``all`` for the roll-up rows when no filter is set)."""
        return {
            "start": self.start, "end": self.end, "step": self.step,
            "m_channel": self.channel or "all", "m_segment": self.segment or "all",
            "channel": self.channel, "segment": self.segment,
        }  # fmt: skip


def _minute_ceil(moment: datetime) -> datetime:
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(minutes=1)


def parse_filters(query: Mapping[str, str], now: datetime) -> Filters:
    """Filters from the request's query string: ``range`` (one of :data:`RANGES`), ``to``
    (ISO 8601, default now; rounded up to a whole minute), ``channel``, ``segment``
    (empty or ``all``: no filter). Raises ValueError with a message for the user."""
    range_name = query.get("range") or DEFAULT_RANGE
    if range_name not in RANGES:
        raise ValueError(f"range must be one of {', '.join(RANGES)}")
    to = query.get("to") or ""
    try:
        end = datetime.fromisoformat(to.replace("Z", "+00:00")) if to else now
    except ValueError:
        raise ValueError("to must be an ISO 8601 timestamp") from None
    end = _minute_ceil(end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC))
    channel = query.get("channel", "").strip()
    channel = "" if channel == "all" else channel
    if channel and channel not in CHANNELS:
        raise ValueError(f"channel must be one of all, {', '.join(CHANNELS)}")
    segment = query.get("segment", "").strip()
    segment = "" if segment == "all" else segment
    if segment and not _SEGMENT.match(segment):
        raise ValueError("segment: 1 to 64 letters, digits, spaces, '_', '-' or '.'")
    start = end - timedelta(seconds=RANGES[range_name])
    return Filters(start, end, range_name, channel, segment)


# --- clauses (constant text; values bound as parameters) ------------------------------------
_IN_RANGE = "{col} >= {{start:DateTime('UTC')}} AND {col} < {{end:DateTime('UTC')}}"
_METRIC_ROWS = "channel = {m_channel:String} AND segment = {m_segment:String}"
_SEGMENT_CUSTOMERS = (
    "SELECT customer_id FROM customers FINAL WHERE is_deleted = 0"
    " AND if(segment = '', 'unknown', segment) = {segment:String}"
)


def _in_range(column: str) -> str:
    return _IN_RANGE.format(col=column)


def _raw_filters(
    f: Filters, channel_col: str, customer_col: str, *, channel: bool = True, segment: bool = True
) -> str:
    """Clauses for raw tables: the channel, and the customer's current segment."""
    clauses = ""
    if f.channel and channel:
        clauses += f" AND {channel_col} = {{channel:String}}"
    if f.segment and segment:
        clauses += f" AND {customer_col} IN ({_SEGMENT_CUSTOMERS})"
    return clauses


# --- panels -----------------------------------------------------------------------------------
def funnel(f: Filters) -> Query:
    """Per stage, from the 1-minute windows in the range: entries, conversions, drop-offs and
    their rates; ``in_stage`` at the newest window before the range's end."""
    sql = f"""
SELECT stage,
    sumIf(entries, in_range) AS entries, sumIf(conversions, in_range) AS conversions,
    sumIf(dropoffs, in_range) AS dropoffs,
    if(conversions + dropoffs = 0, NULL, conversions / (conversions + dropoffs)) AS conversion_rate,
    if(conversions + dropoffs = 0, NULL, dropoffs / (conversions + dropoffs)) AS dropoff_rate,
    argMax(in_stage, window_start) AS in_stage, sumIf(late_events, in_range) AS late_events,
    countIf(in_range AND is_final = 0) AS provisional_windows
FROM (SELECT *, {_in_range("window_start")} AS in_range FROM stage_metrics FINAL
      WHERE {_METRIC_ROWS} AND window_start < {{end:DateTime('UTC')}})
GROUP BY stage"""
    return Query("funnel", sql, f.params())


def dropoff_series(f: Filters) -> Query:
    """Drop-off rate per stage and bucket of ``step`` seconds: drop-offs / outcomes."""
    sql = f"""
SELECT stage, toStartOfInterval(window_start, toIntervalSecond({{step:UInt32}})) AS t,
    sum(conversions) AS conversions, sum(dropoffs) AS dropoffs,
    if(conversions + dropoffs = 0, NULL, dropoffs / (conversions + dropoffs)) AS dropoff_rate,
    min(is_final) AS final
FROM stage_metrics FINAL
WHERE {_METRIC_ROWS} AND {_in_range("window_start")}
GROUP BY stage, t ORDER BY stage, t"""
    return Query("dropoff_series", sql, f.params())


_ALERT_COLUMNS = (
    "alert_id, state, stage, channel, window_start, dropoff_rate, baseline_rate,"
    " relative_increase, zscore, volume, started_at, evaluated_at, summary"
)


def alerts_in_range(f: Filters) -> Query:
    """Alerts fired or resolved on windows in the range (the filtered channel's and the
    stage-wide ones when a channel is chosen)."""
    where = _in_range("window_start")
    if f.channel:
        where += " AND channel IN ({channel:String}, 'all')"
    sql = f"SELECT {_ALERT_COLUMNS} FROM alerts FINAL WHERE {where} ORDER BY evaluated_at"
    return Query("alerts_in_range", sql, f.params())


def recent_alerts(f: Filters, limit: int = 20) -> Query:
    """The newest alert rows whatever the range."""
    where = "channel IN ({channel:String}, 'all')" if f.channel else "1"
    sql = (
        f"SELECT {_ALERT_COLUMNS} FROM alerts FINAL WHERE {where}"
        " ORDER BY evaluated_at DESC, state DESC LIMIT {limit:UInt32}"
    )
    return Query("recent_alerts", sql, {**f.params(), "limit": limit})


def journey_map(f: Filters) -> Query:
    """Stage transitions entered in the range: from_stage -> to_stage by entry channel."""
    sql = f"""
SELECT from_stage, to_stage, channel, count() AS journeys
FROM stage_transitions FINAL
WHERE is_deleted = 0 AND {_in_range("at")}{_raw_filters(f, "channel", "customer_id")}
GROUP BY from_stage, to_stage, channel ORDER BY journeys DESC"""
    return Query("journey_map", sql, f.params())


def channel_mix(f: Filters) -> Query:
    """Stage entries in the range per channel of entry (within the segment filter)."""
    where = "channel != 'all' AND segment = {m_segment:String}"
    where += " AND channel = {channel:String}" if f.channel else ""
    sql = f"""
SELECT channel, stage, sum(entries) AS entries FROM stage_metrics FINAL
WHERE {where} AND {_in_range("window_start")} GROUP BY channel, stage ORDER BY channel, stage"""
    return Query("channel_mix", sql, f.params())


def segment_mix(f: Filters) -> Query:
    """Stage entries in the range per segment (within the channel filter)."""
    where = "segment != 'all' AND channel = {m_channel:String}"
    where += " AND segment = {segment:String}" if f.segment else ""
    sql = f"""
SELECT segment, stage, sum(entries) AS entries FROM stage_metrics FINAL
WHERE {where} AND {_in_range("window_start")} GROUP BY segment, stage ORDER BY segment, stage"""
    return Query("segment_mix", sql, f.params())


def experience(f: Filters) -> Query:
    """CSAT, NPS and hold times of the touchpoints in the range, by the stage the customer's
    journey was at: the latest stage entered at or before the event ('none' if none). Two
    plans giving the same rows: up to NARROW_SECONDS, :func:`_experience_narrow`."""
    return _experience_narrow(f) if f.seconds <= NARROW_SECONDS else _experience_wide(f)


def _experience_narrow(f: Filters) -> Query:
    """:func:`experience` for ranges up to a day. Reads only what the range needs: the rated touchpoints in the range (each event's newest
    version, as FINAL would keep, but without merging the whole day's parts), the identity
    overrides and stage transitions of their customers (both tables are ordered by customer),
    instead of ``touchpoints_current`` and every transition, which cost seconds at 10 M
    events (benchmarks/README.md, queries)."""
    sql = f"""
WITH rated AS (
    SELECT event_id, argMax(customer_id, version) AS stamped_id,
        argMax(occurred_at, version) AS event_at, argMax(csat, version) AS csat_score,
        argMax(nps, version) AS nps_score, argMax(wait_seconds, version) AS waited
    FROM touchpoints
    WHERE {_in_range("occurred_at")}
      AND (csat IS NOT NULL OR nps IS NOT NULL OR wait_seconds IS NOT NULL)
      {_raw_filters(f, "channel", "", segment=False)}
    GROUP BY event_id
), current AS (
    SELECT if(o.current_customer_id = '', r.stamped_id, o.current_customer_id)
            AS current_customer_id,
        r.event_at AS occurred_at, r.csat_score AS csat, r.nps_score AS nps,
        r.waited AS wait_seconds
    FROM rated AS r
    LEFT JOIN (
        SELECT customer_id, argMax(current_customer_id, version) AS current_customer_id
        FROM identity_overrides WHERE customer_id IN (SELECT stamped_id FROM rated)
        GROUP BY customer_id HAVING argMax(is_deleted, version) = 0
    ) AS o ON o.customer_id = r.stamped_id
    WHERE 1 {_raw_filters(f, "", "current_customer_id", channel=False)}
)
SELECT if(s.to_stage = '', 'none', s.to_stage) AS stage,
    countIf(t.csat IS NOT NULL) AS csat_responses, avgIf(t.csat, t.csat IS NOT NULL) AS csat_avg,
    countIf(t.nps IS NOT NULL) AS nps_responses,
    if(nps_responses = 0, NULL,
       100 * (countIf(t.nps >= 9) - countIf(t.nps <= 6)) / nps_responses) AS nps,
    countIf(t.wait_seconds IS NOT NULL) AS waits,
    avgIf(t.wait_seconds, t.wait_seconds IS NOT NULL) AS wait_avg_seconds,
    quantileExactIf(0.9)(t.wait_seconds, t.wait_seconds IS NOT NULL) AS wait_p90_seconds
FROM current AS t
ASOF LEFT JOIN (
    SELECT customer_id, to_stage, at FROM stage_transitions FINAL
    WHERE is_deleted = 0 AND customer_id IN (SELECT current_customer_id FROM current)
) AS s ON s.customer_id = t.current_customer_id AND t.occurred_at >= s.at
GROUP BY stage ORDER BY stage"""
    return Query("experience", sql, f.params())


def _experience_wide(f: Filters) -> Query:
    """:func:`experience` over ``touchpoints_current`` and every transition: at 30 days the
    restricted reads of :func:`_experience_narrow` cover most customers and cost more."""
    sql = f"""
SELECT if(s.to_stage = '', 'none', s.to_stage) AS stage,
    countIf(t.csat IS NOT NULL) AS csat_responses, avgIf(t.csat, t.csat IS NOT NULL) AS csat_avg,
    countIf(t.nps IS NOT NULL) AS nps_responses,
    if(nps_responses = 0, NULL,
       100 * (countIf(t.nps >= 9) - countIf(t.nps <= 6)) / nps_responses) AS nps,
    countIf(t.wait_seconds IS NOT NULL) AS waits,
    avgIf(t.wait_seconds, t.wait_seconds IS NOT NULL) AS wait_avg_seconds,
    quantileExactIf(0.9)(t.wait_seconds, t.wait_seconds IS NOT NULL) AS wait_p90_seconds
FROM (
    SELECT current_customer_id, occurred_at, csat, nps, wait_seconds FROM touchpoints_current
    WHERE {_in_range("occurred_at")}
      AND (csat IS NOT NULL OR nps IS NOT NULL OR wait_seconds IS NOT NULL)
      {_raw_filters(f, "channel", "current_customer_id")}
) AS t
ASOF LEFT JOIN (
    SELECT customer_id, to_stage, at FROM stage_transitions FINAL WHERE is_deleted = 0
) AS s ON s.customer_id = t.current_customer_id AND t.occurred_at >= s.at
GROUP BY stage ORDER BY stage"""
    return Query("experience", sql, f.params())


def freshness(f: Filters) -> Query:
    """The newest data: ingest times and rate of the last minute, the metric clocks."""
    sql = """
SELECT now64(3, 'UTC') AS server_now,
    (SELECT max(ingested_at) FROM touchpoints) AS newest_ingested_at,
    (SELECT least(max(occurred_at), now64(3, 'UTC')) FROM touchpoints) AS newest_event_at,
    (SELECT count() FROM touchpoints WHERE ingested_at > now64(3, 'UTC') - INTERVAL 60 SECOND)
        / 60 AS events_per_second,
    (SELECT if(count() = 0, NULL,
                quantileExact(0.5)(dateDiff('millisecond', received_at, ingested_at)) / 1000)
        FROM touchpoints WHERE ingested_at > now64(3, 'UTC') - INTERVAL 60 SECOND)
        AS ingest_lag_seconds,
    (SELECT max(window_start) FROM stage_metrics
        WHERE channel = 'all' AND segment = 'all' AND is_final = 1) AS newest_final_window,
    (SELECT max(window_start) FROM stage_metrics
        WHERE channel = 'all' AND segment = 'all' AND is_complete = 1) AS newest_complete_window,
    (SELECT max(window_start) FROM stage_metrics WHERE channel = 'all' AND segment = 'all')
        AS newest_window,
    (SELECT argMax(ingest_lag_seconds, written_at) FROM stage_metrics) AS metrics_ingest_lag_seconds,
    (SELECT max(written_at) FROM stage_metrics) AS metrics_written_at"""
    return Query("freshness", sql, {})


def dead_letters(f: Filters, limit: int = 10) -> Query:
    """Dead letters that failed in the range, by reason and stage, most first. A message is
    its source offset (a replayed one is stored twice until merged): counted once, without
    FINAL, which would read every stored original to merge on its hash (300 ms at 50,000
    dead letters)."""
    sql = f"""
SELECT reason, stage, uniqExact(src_topic, src_partition, src_offset) AS messages,
    max(failed_at) AS last_at, sum(messages) OVER () AS total
FROM dead_letters WHERE {_in_range("failed_at")}
GROUP BY reason, stage ORDER BY messages DESC, reason, stage LIMIT {{limit:UInt32}}"""
    return Query("dead_letters", sql, {**f.params(), "limit": limit})


def segments() -> Query:
    """The segments the metrics know, for the filter."""
    sql = "SELECT DISTINCT segment FROM stage_metrics WHERE segment != 'all' ORDER BY segment"
    return Query("segments", sql, {})


PANELS = (funnel, dropoff_series, alerts_in_range, recent_alerts, journey_map, channel_mix,
          segment_mix, experience, dead_letters)  # fmt: skip
"""The filtered queries of one dashboard snapshot (freshness and segments take no filter)."""
