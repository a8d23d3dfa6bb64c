"""``identity squash``: rewrite rows stamped with an old customer id to the current one,
then clear the overrides nothing needs any more. Idempotent; safe while workers write.

**Rewrite.** For every ``ReplacingMergeTree(version)`` table with a ``customer_id`` that is
not in its sorting or partition key (today ``touchpoints``), one server-side
``INSERT ... SELECT`` writes the current version of each row whose customer has a newer id,
with that id and ``version + 1``: under ``FINAL`` the new row replaces the old one. The
mapping is the newest override row of each id with a non-empty target, cleared or not
(only squash writes cleared rows with a target, and they keep it), so a row that arrives
stamped with an id whose override squash already cleared is still fixed by the next run.
A worker replaying an old batch writes version 1, which never beats a rewritten row.

**Clear.** An override is cleared (a row with ``is_deleted = 1`` and version + 1, keeping
its target) only when, in the same statement that writes the clearing row:

* no row of any table holding a customer id references its id, as the table shows it
  (``FINAL`` where the engine merges rows: older versions and rows retracted with
  ``is_deleted`` do not count). Rows in tables squash cannot rewrite (no version, like
  ``identity_refusals``, or customer_id in the key, like ``journeys``) keep theirs alive;
* its version is below the newest version in the table. The resolver's versions are one
  sequence and the identity sink writes them in order, so every later override of this id
  will have a version above that newest one, hence above version + 1: the clearing row
  can never tie with, or hide, a later re-mapping of the same id;
* it landed more than ``grace_seconds`` ago.

**The race.** A worker stamps an event with an old id only until it has applied the
assignment that retired the id (the override lands in ClickHouse at about the same time);
such an event can still be in flight (in the valid topic, in a retrying sink). Were the
override cleared before that event lands, ``touchpoints_current`` would show it under the
old id. The grace period makes that need a pipeline lag above ``grace_seconds``; the
reference check runs in the same statement as the clearing insert, so a row that landed
before it keeps the override; and a row that lands later still has its mapping in the
cleared row, so the next squash rewrites it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import TouchpointError
from pipeline.identity_ops_tables import (
    OVERRIDES,
    VERSION,
    TableInfo,
    discover,
    query_rows,
    quote,
    run_command,
)

STAGE = "identity.squash"
DEFAULT_GRACE_SECONDS = 300.0
RESOLVER_VERSIONS_BELOW = 2**62
"""Forget writes its erasures at version 2**63; resolver versions are a counter far below."""


@dataclass(frozen=True)
class SquashReport:
    rows_rewritten: dict[str, int]
    overrides_cleared: int
    overrides_kept: int
    """Active overrides whose old id still has rows (in tables squash cannot rewrite)."""
    overrides_deferred: int
    """Active overrides too recent to clear yet (the newest version, or within the grace)."""
    skipped_tables: dict[str, str] = field(default_factory=dict)
    """Tables holding a customer id that squash cannot rewrite, and why."""

    def lines(self) -> list[str]:
        rewritten = ", ".join(f"{t}={n}" for t, n in sorted(self.rows_rewritten.items()))
        out = [
            f"rows rewritten to their current customer: {rewritten or '-'}",
            f"overrides cleared: {self.overrides_cleared}",
            f"overrides kept (old id still referenced): {self.overrides_kept}",
            f"overrides deferred (too recent): {self.overrides_deferred}",
        ]
        out += [f"not rewritten: {t} ({why})" for t, why in sorted(self.skipped_tables.items())]
        return out


def _mapping(database: str) -> str:
    return (
        "SELECT customer_id AS old_id, argMax(current_customer_id, version) AS new_id "
        f"FROM {quote(database)}.{quote(OVERRIDES)} GROUP BY customer_id HAVING new_id != ''"
    )


def rewrite_sql(table: TableInfo) -> str:
    """The INSERT ... SELECT that moves a table's rows to their current customer ids."""
    exprs = []
    for column in table.columns:
        if column == "customer_id":
            exprs.append("m.new_id")
        elif column == VERSION:
            exprs.append(f"t.{quote(VERSION)} + 1")
        else:
            exprs.append(f"t.{quote(column)}")
    return (
        f"INSERT INTO {table.qualified} ({', '.join(quote(c) for c in table.columns)}) "
        f"SELECT {', '.join(exprs)} FROM {table.qualified} AS t FINAL "
        f"INNER JOIN ({_mapping(table.database)}) AS m ON m.old_id = t.customer_id "
        "WHERE m.new_id != t.customer_id SETTINGS insert_deduplicate = 0"
    )


def _latest(database: str) -> str:
    return (
        "SELECT customer_id, argMax(current_customer_id, version) AS cur, "
        "argMax(merged_at, version) AS merged, max(version) AS v, "
        "argMax(is_deleted, version) AS deleted, argMax(ingested_at, version) AS landed "
        f"FROM {quote(database)}.{quote(OVERRIDES)} GROUP BY customer_id"
    )


def _referenced(refs: list[TableInfo]) -> str:
    """SQL for the customer ids that rows of ``refs`` still hold, as each table shows them
    (``FINAL``: older versions and retracted rows reference nothing)."""
    selects = [
        f"SELECT customer_id FROM {t.qualified}{' FINAL' if t.collapses else ''}" for t in refs
    ]
    return " UNION ALL ".join(selects) or "SELECT '' AS customer_id WHERE 0"


def _clear_where(database: str, refs: str) -> tuple[str, str]:
    """(active, clearable): conditions on a row of :func:`_latest`."""
    newest = (
        f"(SELECT max(version) FROM {quote(database)}.{quote(OVERRIDES)} "
        f"WHERE version < {RESOLVER_VERSIONS_BELOW})"
    )
    active = "deleted = 0 AND cur != ''"
    settled = f"v < {newest} AND landed <= now64(3) - toIntervalMillisecond({{grace_ms:UInt64}})"
    return active, f"{active} AND {settled} AND customer_id NOT IN ({refs})"


def _override_stats(client: Any, database: str, refs: str, grace_ms: int) -> tuple[int, int]:
    """(kept, deferred) among the active overrides, before clearing."""
    active, clearable = _clear_where(database, refs)
    sql = (
        f"SELECT countIf(referenced), countIf(NOT referenced AND NOT ({clearable})) "
        f"FROM (SELECT *, customer_id IN ({refs}) AS referenced FROM ({_latest(database)})) "
        f"WHERE {active}"
    )
    kept, deferred = query_rows(client, sql, {"grace_ms": grace_ms}, STAGE)[0]
    return int(kept), int(deferred)


def clear_sql(database: str, refs: str) -> str:
    """The INSERT ... SELECT that clears every override that is safe to clear."""
    _active, clearable = _clear_where(database, refs)
    return (
        f"INSERT INTO {quote(database)}.{quote(OVERRIDES)} "
        "(customer_id, current_customer_id, merged_at, version, is_deleted) "
        f"SELECT customer_id, cur, merged, v + 1, 1 FROM ({_latest(database)}) "
        f"WHERE {clearable} SETTINGS insert_deduplicate = 0"
    )


def squash(
    client: Any, database: str, *, grace_seconds: float = DEFAULT_GRACE_SECONDS
) -> SquashReport:
    """Rewrite rows to their current customer ids, then clear unneeded overrides."""
    tables = [t for t in discover(client, database) if t.holds_customer]
    if not any(t.name == OVERRIDES for t in tables):
        raise TouchpointError(f"no {OVERRIDES} table in database {database!r}", stage=STAGE)
    refusals = {t.name: why for t in tables if (why := t.squash_refusal()) is not None}
    rewritable = [t for t in tables if t.name not in refusals]
    rows = {t.name: run_command(client, rewrite_sql(t), {}, STAGE) for t in rewritable}
    refs = _referenced([t for t in tables if t.name != OVERRIDES])
    grace_ms = max(0, int(grace_seconds * 1000))
    kept, deferred = _override_stats(client, database, refs, grace_ms)
    cleared = run_command(client, clear_sql(database, refs), {"grace_ms": grace_ms}, STAGE)
    refusals.pop(OVERRIDES, None)
    return SquashReport(rows, cleared, kept, deferred, refusals)
