"""What the journey stage tells the metrics stage about one batch (:class:`MetricInput`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from schemas.journey import CustomerProfile, StageTransition
from schemas.metrics import UNKNOWN_SEGMENT, MetricInput
from schemas.records import Touchpoint


def window_start(at: datetime, width: int = 60) -> str:
    ts = int(at.timestamp() // width) * width
    return datetime.fromtimestamp(ts, UTC).isoformat()


def metric_input(
    stamped: Sequence[Touchpoint],
    transitions: Sequence[StageTransition],
    customers: Sequence[CustomerProfile],
    produced_at: datetime | None = None,
    partitions: dict[int, datetime] | None = None,
) -> MetricInput | None:
    """The batch's transitions, segments and event counts; None if it has none of them.
    ``partitions``: the newest event time of each ``<prefix>.valid`` partition in the batch."""
    if not (stamped or transitions or customers):
        return None
    events = Counter(window_start(tp.occurred_at) for tp in stamped)
    return MetricInput(
        transitions=tuple(transitions),
        segments={
            c.customer_id: c.segment or UNKNOWN_SEGMENT for c in customers if not c.is_deleted
        },
        events=dict(events),
        newest_event_at=max((tp.occurred_at for tp in stamped), default=None),
        newest_arrived_at=max((tp.src.timestamp or tp.received_at for tp in stamped), default=None),
        produced_at=produced_at,
        partitions={str(p): at for p, at in (partitions or {}).items()},
    )
