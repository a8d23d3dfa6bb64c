"""What a settled pipeline holds, read back from ClickHouse to compare two runs on one input.

A :class:`Snapshot` keeps the rows whose content should not depend on how many workers ran
or when one of them died: each event's current customer, the live ``stage_transitions``,
``journeys`` and ``customers`` rows (``FINAL``, without versions and ingestion times), and
the final stage-metric windows by stage (stored, and the ``late_events`` that reached them
after they were final). Rows of the settle barrier's customers (events ``barrier-*``, see
``tests/integration/test_scale_identity.py``) are left out.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client

BARRIER_PREFIX = "barrier-"
MEASURES = ("entries", "conversions", "dropoffs")

Row = tuple[Any, ...]
Window = tuple[int, str]
"""(window start as a unix time, stage)."""

_BARRIER_CUSTOMERS = (
    "SELECT current_customer_id FROM touchpoints_current "
    f"WHERE startsWith(event_id, '{BARRIER_PREFIX}') "
    "UNION DISTINCT SELECT customer_id FROM touchpoints "
    f"WHERE startsWith(event_id, '{BARRIER_PREFIX}')"
)
_NOT_BARRIER = f"customer_id NOT IN ({_BARRIER_CUSTOMERS})"
_CURRENT = (
    "SELECT event_id, current_customer_id FROM touchpoints_current "
    f"WHERE NOT startsWith(event_id, '{BARRIER_PREFIX}')"
)
_TRANSITIONS = (
    "SELECT customer_id, journey_id, from_stage, to_stage, at, event_id, completed_at "
    f"FROM stage_transitions FINAL WHERE is_deleted = 0 AND {_NOT_BARRIER}"
)
_JOURNEYS = (
    "SELECT customer_id, journey_id, started_at, last_seen, current_stage, stages, completed "
    f"FROM journeys FINAL WHERE is_deleted = 0 AND {_NOT_BARRIER}"
)
_CUSTOMERS = (
    "SELECT customer_id, journey_id, stage, first_seen, last_seen, "
    "arraySort(mapKeys(channels)), arraySort(mapValues(channels)), segment, purchases, "
    f"journeys FROM customers FINAL WHERE is_deleted = 0 AND {_NOT_BARRIER}"
)
_WINDOWS = (
    "SELECT toUnixTimestamp(window_start), stage, sum(entries), sum(conversions), "
    "sum(dropoffs) FROM stage_metrics FINAL "
    "WHERE is_final = 1 AND channel != 'all' AND segment != 'all' GROUP BY 1, 2"
)
_LATE = (
    "SELECT toUnixTimestamp(window_start), stage, measure, sum(delta) FROM late_events "
    "WHERE channel != 'all' AND segment != 'all' GROUP BY 1, 2, 3"
)
_FINAL_UNTIL = "SELECT toUnixTimestamp(max(window_end)) FROM stage_metrics WHERE is_final = 1"


@dataclass(frozen=True)
class Snapshot:
    current: dict[str, str]
    """event id -> its current customer id."""
    transitions: frozenset[Row]
    """(customer, journey, from, to, at, event id, completed at) of live transitions."""
    journeys: frozenset[Row]
    customers: frozenset[Row]
    windows: dict[Window, tuple[int, int, int]]
    """Final windows: (entries, conversions, dropoffs) stored in ``stage_metrics``."""
    late: Counter[tuple[int, str, str]]
    """(window start, stage, measure) -> the sum of late deltas."""
    final_until: int
    """Windows ending at or before this unix time are final."""

    def totals(self, until: int, with_late: bool) -> dict[str, tuple[int, ...]]:
        """Per stage, (entries, conversions, dropoffs) over the final windows starting
        before ``until``; ``with_late`` adds the late changes (a recomputation's totals)."""
        sums: dict[str, list[int]] = {}
        for (start, stage), counts in self.windows.items():
            if start < until:
                acc = sums.setdefault(stage, [0, 0, 0])
                for i, n in enumerate(counts):
                    acc[i] += n
        if with_late:
            for (start, stage, measure), delta in self.late.items():
                if start < until and measure in MEASURES:
                    sums.setdefault(stage, [0, 0, 0])[MEASURES.index(measure)] += delta
        return {stage: tuple(acc) for stage, acc in sorted(sums.items())}


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _rows(client: Client, sql: str) -> frozenset[Row]:
    rows = client.query(sql).result_rows
    return frozenset(tuple(_hashable(v) for v in row) for row in rows)


def read_snapshot(client: Client) -> Snapshot:
    """Read a settled pipeline's state (call once it is quiet)."""
    current = {str(e): str(c) for e, c in client.query(_CURRENT).result_rows}
    windows = {
        (int(start), str(stage)): (int(entries), int(conversions), int(dropoffs))
        for start, stage, entries, conversions, dropoffs in client.query(_WINDOWS).result_rows
    }
    late: Counter[tuple[int, str, str]] = Counter()
    for start, stage, measure, delta in client.query(_LATE).result_rows:
        late[int(start), str(stage), str(measure)] += int(delta)
    until = client.query(_FINAL_UNTIL).result_rows[0][0]
    return Snapshot(
        current=current,
        transitions=_rows(client, _TRANSITIONS),
        journeys=_rows(client, _JOURNEYS),
        customers=_rows(client, _CUSTOMERS),
        windows=windows,
        late=late,
        final_until=int(until or 0),
    )


def without_journey_ids(rows: frozenset[Row]) -> frozenset[Row]:
    """The rows without their journey id (the second column of the three journey tables)."""
    return frozenset(row[:1] + row[2:] for row in rows)


def journeys_of(transitions: frozenset[Row]) -> frozenset[Row]:
    """Each journey as (customer, its transitions without the journey id)."""
    grouped: dict[tuple[Any, Any], set[Row]] = {}
    for row in transitions:
        grouped.setdefault((row[0], row[1]), set()).add(row[:1] + row[2:])
    return frozenset((c, frozenset(rows)) for (c, _), rows in grouped.items())
