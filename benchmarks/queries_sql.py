"""The SQL that scales the base month of benchmark ``queries`` (see benchmarks/queries_data.py):
copies of the per-customer tables with suffixed ids and shifted times, and ``stage_metrics``
rebuilt from every transition."""

from __future__ import annotations

from pipeline.verify_metrics import MEASURE_ITEMS, WITH_MODEL

SHIFT_MS = 7000
"""Copy ``n`` happens ``n x 7`` seconds earlier (100 copies span 12 minutes)."""
OFFSET_STEP = 1_000_000_000
"""Copy ``n`` of a dead letter sits ``n x 10^9`` offsets further (its key includes the offset)."""

_IDS: dict[str, tuple[str, ...]] = {
    "touchpoints": (
        "event_id", "customer_id", "journey_id", "anonymous_id", "user_id", "email", "phone",
        "chat_visitor_id", "crm_id", "order_id", "conversation_id", "call_id",
    ),
    "dead_letters": ("event_id",),
    "identity_overrides": ("customer_id", "current_customer_id"),
    "identity_refusals": ("event_id", "node", "customer_id"),
    "stage_transitions": ("customer_id", "journey_id", "event_id"),
    "journeys": ("customer_id", "journey_id"),
    "customers": ("customer_id", "journey_id"),
}  # fmt: skip
_TIMES: dict[str, tuple[str, ...]] = {
    "touchpoints": ("occurred_at", "produced_at", "received_at", "ingested_at"),
    "dead_letters": ("failed_at", "ingested_at"),
    "identity_overrides": ("merged_at", "ingested_at"),
    "identity_refusals": ("occurred_at", "ingested_at"),
    "stage_transitions": ("at", "completed_at", "ingested_at"),
    "journeys": ("started_at", "last_seen", "ingested_at"),
    "customers": ("first_seen", "last_seen", "ingested_at"),
}
_OTHER: dict[str, tuple[str, ...]] = {
    "touchpoints": (
        "mapApply((k, v) -> (k, concat(v, '~', toString(n))), identifiers) AS identifiers",
    ),
    "dead_letters": (f"src_offset + n * {OFFSET_STEP} AS src_offset",),
}
COPY_TABLES = tuple(_IDS)

LIVE_TIMES = (
    """ALTER TABLE touchpoints UPDATE produced_at = occurred_at + toIntervalMillisecond(200),
    received_at = occurred_at + toIntervalMillisecond(1000),
    ingested_at = occurred_at + toIntervalMillisecond(1000 + cityHash64(event_id) % 5000)
    WHERE 1 SETTINGS mutations_sync = 2""",
    "CREATE TABLE dead_letters_spread AS dead_letters",
    """INSERT INTO dead_letters_spread SELECT * REPLACE (
        failed_at - toIntervalSecond(cityHash64(src_offset, src_partition) % 2592000) AS failed_at,
        failed_at - toIntervalSecond(cityHash64(src_offset, src_partition) % 2592000)
            + toIntervalMillisecond(500) AS ingested_at
    ) FROM dead_letters FINAL""",
    "TRUNCATE TABLE dead_letters",
    "INSERT INTO dead_letters SELECT * FROM dead_letters_spread",
    "DROP TABLE dead_letters_spread",
)
"""The base month was produced at once, so its ingest times all fall in the few minutes of the
run: make them those of a live pipeline (stored 1-6 s after the event; dead letters spread
over the 30 days), which the freshness queries filter on."""


def snapshot_sql(table: str) -> tuple[str, ...]:
    """``base_<table>``: the current rows of ``table`` before any copy, the copies' source (a
    copy of the table itself would copy the copies already inserted)."""
    return (
        f"DROP TABLE IF EXISTS base_{table}",
        f"CREATE TABLE base_{table} AS {table}",
        f"INSERT INTO base_{table} SELECT * FROM {table} FINAL",
    )


def copy_sql(table: str, first: int, count: int) -> str:
    """INSERT copies ``first`` .. ``first + count - 1`` of ``base_<table>`` into ``table``."""
    if table not in _IDS:
        raise ValueError(f"table {table!r}: not one of {', '.join(COPY_TABLES)}")
    ids = [f"if({c} = '', {c}, concat({c}, '~', toString(n))) AS {c}" for c in _IDS[table]]
    times = [f"{c} - toIntervalMillisecond(n * {SHIFT_MS}) AS {c}" for c in _TIMES[table]]
    replaced = ",\n    ".join([*ids, *times, *_OTHER.get(table, ())])
    return f"""
INSERT INTO {table}
SELECT * EXCEPT (n) REPLACE (
    {replaced}
)
FROM base_{table} AS t
CROSS JOIN (SELECT number AS n FROM numbers({first:d}, {count:d})) AS c"""


_WINDOWS = f"""
SELECT toDateTime(toStartOfMinute(t), 'UTC') AS w, stage, ru.1 AS ch, ru.2 AS seg,
    countIf(measure = 'entries') AS entries, countIf(measure = 'conversions') AS conversions,
    countIf(measure = 'dropoffs') AS dropoffs,
    quantileExactIf(0.5)(secs, measure = 'conversions') AS median_secs,
    quantileExactIf(0.9)(secs, measure = 'conversions') AS p90_secs
FROM (
    SELECT *, dateDiff('millisecond', at, ifNull(conv_at, at)) / 1000 AS secs
    FROM ({MEASURE_ITEMS})
    WHERE t <= (SELECT max(occurred_at) FROM touchpoints)
) AS i
ARRAY JOIN [(i.channel, i.segment), ('all', i.segment), (i.channel, 'all'), ('all', 'all')] AS ru
GROUP BY w, stage, ch, seg"""

METRICS_REBUILD = f"""
INSERT INTO stage_metrics (window_start, window_end, stage, channel, segment, entries,
    conversions, dropoffs, conversion_rate, dropoff_rate, in_stage, median_seconds_to_convert,
    p90_seconds_to_convert, events, ingest_lag_seconds, late_events, is_complete, is_final,
    version)
{WITH_MODEL}
SELECT m.w, m.w + 60, stage, ch, seg, entries, conversions, dropoffs,
    if(conversions + dropoffs = 0, NULL, conversions / (conversions + dropoffs)),
    if(conversions + dropoffs = 0, NULL, dropoffs / (conversions + dropoffs)),
    sum(toInt64(entries) - conversions - dropoffs) OVER (
        PARTITION BY stage, ch, seg ORDER BY m.w ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
    if(conversions = 0, NULL, median_secs), if(conversions = 0, NULL, p90_secs),
    ifNull(e.events, 0), 1.0, 0, m.w < x.newest - 600, m.w < x.newest - 600, 1
FROM ({_WINDOWS}) AS m
LEFT JOIN (
    SELECT toDateTime(toStartOfMinute(occurred_at), 'UTC') AS ew, count() AS events
    FROM touchpoints GROUP BY ew
) AS e ON e.ew = m.w
CROSS JOIN (SELECT toDateTime(max(occurred_at), 'UTC') AS newest FROM touchpoints) AS x"""
"""Every 1-minute window with an entry, conversion or drop-off, per stage, channel and segment
and their roll-ups ('all'), as the metrics stage writes them once final; the last 10 minutes
before the newest event are neither complete nor final."""
