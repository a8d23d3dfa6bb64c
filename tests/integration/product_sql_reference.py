"""Independent Python computations of the funnels and attribution models that docs/sql.md
and migration 0007 compute in ClickHouse, over raw rows read with plain SELECTs.

Nothing here calls ClickHouse functions: the funnel is the definition ("the furthest step
reached by a chain of events in step order, each at or after the previous one, the last
at most `window` seconds after the first"), not a port of windowFunnel's algorithm.
"""

from __future__ import annotations

import calendar
import json
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

LOOKBACK = timedelta(days=30)
MODELS = ("first_touch", "last_touch", "linear", "position_based", "time_decay")
TOUCH_TYPES = {
    "web": {"ad_click", "page_view"},
    "email": {"email_opened", "email_clicked"},
    "chat": {"chat_started"},
    "call_center": {"call_started"},
}


@dataclass(frozen=True)
class Event:
    event_id: str
    occurred_at: datetime
    channel: str
    event_type: str
    stage: str
    customer: str
    """Current identity, from touchpoints.customer_id and identity_overrides."""
    campaign: str
    revenue: float | None
    conversation_id: str
    call_id: str
    outcome: str
    properties: dict[str, Any]

    @property
    def second(self) -> int:
        return calendar.timegm(self.occurred_at.utctimetuple())


EVENT_COLUMNS = (
    "event_id, occurred_at, channel, event_type, stage, customer_id, campaign, revenue,"
    " conversation_id, call_id, outcome, properties"
)


def current_events(rows: Iterable[Sequence[Any]], overrides: Iterable[Sequence[Any]]) -> list[Event]:
    """Events from ``touchpoints FINAL`` rows, re-attributed with ``identity_overrides FINAL``
    rows ``(customer_id, current_customer_id, is_deleted)``."""
    current = {old: new for old, new, deleted in overrides if not deleted and new}
    out = []
    for eid, at, channel, etype, stage, cust, campaign, revenue, conv, call, outcome, props in rows:
        out.append(Event(eid, at, channel, etype, stage, current.get(cust, cust), campaign,
                         revenue, conv, call, outcome, json.loads(props or "{}")))  # fmt: skip
    return out


# --- funnels ----------------------------------------------------------------------------------
Step = Callable[[Event], bool]


def max_level(entries: list[tuple[int, int]], window: int, steps: int) -> int:
    """The furthest step of a chain 1, 2, ... over (second, step) entries, taken in order of
    (second, step), with the last at most ``window`` seconds after the first."""
    entries = sorted(entries)
    best = 0
    for start, (t0, step) in enumerate(entries):
        if step != 1:
            continue
        level, pos = 1, start
        while level < steps:
            nxt = next(
                (j for j in range(pos + 1, len(entries))
                 if entries[j][1] == level + 1 and entries[j][0] <= t0 + window),
                None,
            )  # fmt: skip
            if nxt is None:
                break
            level, pos = level + 1, nxt
        best = max(best, level)
    return best


def funnel(
    events: Iterable[Event], unit: Callable[[Event], str | None], steps: Sequence[Step], window: int
) -> list[int]:
    """Units reaching each step (index 0: step 1)."""
    entries: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for e in events:
        key = unit(e)
        if key is None:
            continue
        entries[key].extend((e.second, i + 1) for i, test in enumerate(steps) if test(e))
    levels = [max_level(v, window, len(steps)) for v in entries.values()]
    return [sum(level >= k for level in levels) for k in range(1, len(steps) + 1)]


def journey_of(journeys: Iterable[Sequence[Any]]) -> Callable[[Event], str | None]:
    """The current journey of an event: its customer's journey that started last at or
    before it (``journeys FINAL`` rows ``(customer_id, journey_id, started_at)``)."""
    by_customer: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for customer, journey, started in journeys:
        by_customer[customer].append((started, journey))
    for spans in by_customer.values():
        spans.sort()

    def unit(e: Event) -> str | None:
        spans = by_customer.get(e.customer, [])
        i = bisect_right([s for s, _ in spans], e.occurred_at)
        return spans[i - 1][1] if i else None

    return unit


# --- attribution --------------------------------------------------------------------------------
def is_touch(e: Event) -> bool:
    if e.event_type not in TOUCH_TYPES.get(e.channel, ()):
        return False
    return e.channel != "email" or e.properties.get("kind") != "transactional"


def credits(touches: Sequence[Event], purchase: Event, half_life_hours: float) -> dict[str, list[float]]:
    """Each model's credit of each touch (in path order) for one purchase."""
    n = len(touches)
    ages = [(purchase.occurred_at - t.occurred_at).total_seconds() for t in touches]
    decay = [2 ** (-a / (half_life_hours * 3600)) for a in ages]
    if n == 2:
        position = [0.5, 0.5]
    else:
        position = [0.4 if i in (0, n - 1) else 0.2 / (n - 2) for i in range(n)]
    return {
        "first_touch": [1.0 if i == 0 else 0.0 for i in range(n)],
        "last_touch": [1.0 if i == n - 1 else 0.0 for i in range(n)],
        "linear": [1 / n] * n,
        "position_based": position if n > 1 else [1.0],
        "time_decay": [d / sum(decay) for d in decay],
    }


def attribution(events: Sequence[Event], half_life_hours: float) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(model, channel, campaign) -> (purchases, revenue) credited; purchases without a touch
    on their path credit channel '' and campaign ''."""
    touches: dict[str, list[Event]] = defaultdict(list)
    purchases: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        if is_touch(e):
            touches[e.customer].append(e)
        if e.channel == "web" and e.event_type == "purchase":
            purchases[e.customer].append(e)
    out: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for customer, bought in purchases.items():
        bought.sort(key=lambda p: (p.occurred_at, p.event_id))
        mine = sorted(touches[customer], key=lambda t: (t.occurred_at, t.event_id))
        previous: datetime | None = None
        for p in bought:
            path = [
                t for t in mine
                if t.occurred_at < p.occurred_at and t.occurred_at >= p.occurred_at - LOOKBACK
                and (previous is None or t.occurred_at > previous)
            ]  # fmt: skip
            previous = p.occurred_at
            revenue = p.revenue or 0.0
            if not path:
                for model in MODELS:
                    out[(model, "", "")][0] += 1
                    out[(model, "", "")][1] += revenue
                continue
            for model, weights in credits(path, p, half_life_hours).items():
                for t, w in zip(path, weights, strict=True):
                    out[(model, t.channel, t.campaign)][0] += w
                    out[(model, t.channel, t.campaign)][1] += w * revenue
    return {k: (v[0], v[1]) for k, v in out.items()}
