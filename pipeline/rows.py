"""Records to ClickHouse rows: one column list and one row function per table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.identity import IdentityEvents, fallback_customer_id
from schemas.journey import CustomerProfile, JourneyRow, StageTransition
from schemas.records import DeadLetter, Touchpoint

TOUCHPOINT_COLUMNS = (
    "event_id", "occurred_at", "produced_at", "received_at", "channel", "event_type", "known_type", "stage",
    "customer_id", "journey_id", "identifiers", "anonymous_id", "user_id", "email", "phone",
    "chat_visitor_id", "crm_id", "properties", "extra", "revenue", "currency", "campaign",
    "order_id", "conversation_id", "call_id", "topic", "wait_seconds", "duration_seconds",
    "outcome", "csat", "nps", "schema_version", "source", "dropped_identifiers", "src_topic",
    "src_partition", "src_offset", "version",
)  # fmt: skip

DEAD_LETTER_COLUMNS = (
    "failed_at", "reason", "stage", "event_id", "error_paths", "error_messages", "error_values",
    "error_text", "original", "original_size", "src_topic", "src_partition", "src_offset",
)  # fmt: skip


def _text(props: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = props.get(key)
        if value is not None:
            return str(value)
    return ""


def _number(props: dict[str, Any], key: str) -> float | None:
    value = props.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _small(props: dict[str, Any], key: str) -> int | None:
    value = props.get(key)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _resolved(value: Any) -> str:
    return "" if not isinstance(value, bool) else ("resolved" if value else "unresolved")


def touchpoint_row(tp: Touchpoint, version: int = 1) -> list[Any]:
    """One ``touchpoints`` row, in :data:`TOUCHPOINT_COLUMNS` order."""
    ids, props = tp.identifiers, tp.properties
    outcome = props.get("outcome")
    return [
        tp.event_id, tp.occurred_at, tp.src.timestamp, tp.received_at, tp.channel, tp.event_type, tp.known_type,
        tp.stage, tp.customer_id, tp.journey_id, ids, ids.get("anonymous_id", ""),
        ids.get("user_id", ""), ids.get("email", ""), ids.get("phone", ""),
        ids.get("chat_visitor_id", ""), ids.get("crm_id", ""),
        orjson.dumps(props).decode(), orjson.dumps(tp.extra).decode() if tp.extra else "",
        _number(props, "revenue"), _text(props, "currency"),
        _text(props, "utm_campaign", "campaign", "campaign_id"), _text(props, "order_id"),
        _text(props, "conversation_id"), _text(props, "call_id"), _text(props, "topic", "queue"),
        _number(props, "wait_seconds"), _number(props, "duration_seconds"),
        outcome if isinstance(outcome, str) else _resolved(props.get("resolved")),
        _small(props, "csat"), _small(props, "nps"), tp.schema_version, tp.source or "",
        list(tp.dropped_identifiers), tp.src.topic, tp.src.partition, tp.src.offset, version,
    ]  # fmt: skip


def dead_letter_row(dl: DeadLetter) -> list[Any]:
    """One ``dead_letters`` row, in :data:`DEAD_LETTER_COLUMNS` order."""
    errors = dl.errors
    return [
        dl.failed_at, dl.reason, dl.stage, dl.event_id,
        [e.path for e in errors], [e.message for e in errors], [e.value for e in errors],
        "; ".join(f"{e.path}: {e.message} (got {e.value})" for e in errors),
        dl.original, len(dl.original), dl.src.topic, dl.src.partition, dl.src.offset,
    ]  # fmt: skip


OVERRIDE_COLUMNS = ("customer_id", "current_customer_id", "merged_at", "version", "is_deleted")
REFUSAL_COLUMNS = (
    "event_id", "node", "identifier_type", "reason", "customer_id", "occurred_at", "detail",
)  # fmt: skip


def override_rows(events: IdentityEvents, now: datetime) -> list[list[Any]]:
    """``identity_overrides`` rows: each merged-away customer points at its survivor, and
    each identifier's fallback id at the customer the identifier was assigned to."""
    rows = [[m.absorbed, m.survivor, m.occurred_at, m.version, 0] for m in events.merges]
    for a in events.assignments:
        fallback = fallback_customer_id(a.node)
        if fallback != a.customer_id:
            rows.append([fallback, a.customer_id, now, a.version, 0 if a.customer_id else 1])
    for gone in events.forgotten:  # an erased customer's overrides are deleted too
        for customer in (gone.customer_id, *gone.absorbed):
            if customer:
                rows.append([customer, "", now, 2**63, 1])
    return rows


def refusal_rows(events: IdentityEvents) -> list[list[Any]]:
    """``identity_refusals`` rows, one per refused identifier."""
    return [
        [
            r.event_id,
            r.node,
            r.node.partition(":")[0],
            r.reason,
            r.customer_id,
            r.occurred_at,
            r.detail,
        ]
        for r in events.refusals
    ]


TRANSITION_COLUMNS = (
    "customer_id", "journey_id", "from_stage", "to_stage", "at", "channel", "event_id",
    "seconds_in_previous", "completed_at", "version", "is_deleted",
)  # fmt: skip
JOURNEY_COLUMNS = (
    "customer_id", "journey_id", "started_at", "last_seen", "current_stage", "stages",
    "completed", "version", "is_deleted",
)  # fmt: skip
CUSTOMER_COLUMNS = (
    "customer_id", "journey_id", "stage", "first_seen", "last_seen", "channels", "segment",
    "purchases", "journeys", "version", "is_deleted",
)  # fmt: skip


def transition_row(t: StageTransition) -> list[Any]:
    """One ``stage_transitions`` row, in :data:`TRANSITION_COLUMNS` order."""
    return [
        t.customer_id, t.journey_id, t.from_stage or "", t.to_stage, t.at, t.channel,
        t.event_id, t.seconds_in_previous, t.completed_at, t.version, int(t.is_deleted),
    ]  # fmt: skip


def journey_row(j: JourneyRow) -> list[Any]:
    """One ``journeys`` row, in :data:`JOURNEY_COLUMNS` order."""
    return [
        j.customer_id, j.journey_id, j.started_at, j.last_seen, j.current_stage or "",
        list(j.stages), list(j.completed), j.version, int(j.is_deleted),
    ]  # fmt: skip


def customer_row(c: CustomerProfile) -> list[Any]:
    """One ``customers`` row, in :data:`CUSTOMER_COLUMNS` order."""
    return [
        c.customer_id, c.journey_id, c.stage or "", c.first_seen, c.last_seen, c.channels,
        c.segment or "", c.purchases, c.journeys, c.version, int(c.is_deleted),
    ]  # fmt: skip


STAGE_METRICS_COLUMNS = (
    "window_start", "window_end", "stage", "channel", "segment", "entries", "conversions",
    "dropoffs", "conversion_rate", "dropoff_rate", "in_stage", "median_seconds_to_convert",
    "p90_seconds_to_convert", "events", "ingest_lag_seconds", "late_events", "is_complete",
    "is_final", "version",
)  # fmt: skip
LATE_COLUMNS = (
    "window_start", "stage", "channel", "segment", "customer_id", "journey_id", "measure",
    "delta", "final_until", "change_id",
)  # fmt: skip
ALERT_COLUMNS = (
    "alert_id", "state", "stage", "channel", "window_start", "dropoff_rate", "baseline_rate",
    "relative_increase", "zscore", "volume", "started_at", "evaluated_at", "summary",
)  # fmt: skip


def model_row(record: BaseModel, columns: Sequence[str]) -> list[Any]:
    """A row of ``columns`` from the same-named fields of ``record`` (booleans as 0/1)."""
    values = [getattr(record, c) for c in columns]
    return [int(v) if isinstance(v, bool) else v for v in values]


TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "touchpoints": TOUCHPOINT_COLUMNS,
    "dead_letters": DEAD_LETTER_COLUMNS,
    "identity_overrides": OVERRIDE_COLUMNS,
    "identity_refusals": REFUSAL_COLUMNS,
    "stage_transitions": TRANSITION_COLUMNS,
    "stage_metrics": STAGE_METRICS_COLUMNS,
    "late_events": LATE_COLUMNS,
    "alerts": ALERT_COLUMNS,
    "journeys": JOURNEY_COLUMNS,
    "customers": CUSTOMER_COLUMNS,
}
