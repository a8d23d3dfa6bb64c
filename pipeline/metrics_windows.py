"""The 1-minute windows of the metrics stage: aggregates, completeness, finality, rows.

A window is keyed by ``(start, stage, channel, segment)`` (:data:`WKey`, ``start`` in epoch
seconds); every change to a specific bucket is also applied to its roll-ups (``channel`` and
``segment`` ``all``). A change to a window that is already final is not applied: it is
returned as late, and only the window's ``late_events`` count moves. Windows are dropped
from memory once final and older than ``keep_final`` seconds; customers in a stage are
counted by carrying their net balance (entries minus outcomes) forward.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.metrics import ALL, StageWindow

Bucket = tuple[str, str, str]
"""(stage, channel, segment)."""
WKey = tuple[int, str, str, str]
"""(window start in epoch seconds, stage, channel, segment)."""
Item = tuple[str, int, str, str, str, float | None, int | None]
"""(measure, window start, stage, channel, segment, seconds to convert, start of the entry's
window): one contribution; the last two only for conversions."""


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def rollups(stage: str, channel: str, segment: str) -> tuple[Bucket, ...]:
    return (
        (stage, channel, segment),
        (stage, ALL, segment),
        (stage, channel, ALL),
        (stage, ALL, ALL),
    )


@dataclass(slots=True)
class Agg:
    entries: int = 0
    conversions: int = 0
    dropoffs: int = 0
    seconds: list[float] = field(default_factory=list)
    """Seconds to convert of the window's conversions, sorted."""
    late: int = 0
    lags: dict[int, int] = field(default_factory=dict)
    """Conversions of this window by windows since their entry's window (``segment`` ``all``
    only): what the drop-off detector expects conversions from."""


def _quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile of sorted ``values`` (ClickHouse ``quantileExact`` agrees)."""
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def _count(counts: dict[int, int], key: int, sign: int) -> None:
    n = counts.get(key, 0) + sign
    if n:
        counts[key] = n
    else:
        del counts[key]


class Windows:
    """Every window the metrics stage still holds, and the clocks that close them."""

    def __init__(self, width: int = 60, keep_final: int = 600) -> None:
        self.width, self.keep_final = width, keep_final
        self.aggs: dict[WKey, Agg] = {}
        self.events: dict[int, int] = defaultdict(int)
        self.carried: dict[Bucket, int] = defaultdict(int)
        """Net in-stage balance of the windows already dropped, per bucket."""
        self.by_start: dict[int, set[WKey]] = defaultdict(set)
        self._starts: list[int] = []
        self.complete_until = float("-inf")
        self.final_until = float("-inf")
        self.dirty: set[WKey] = set()
        self.dropped_until = float("-inf")
        """Windows ending before this are no longer held (final, older than keep_final)."""

    def start_of(self, ts: float) -> int:
        return int(ts // self.width) * self.width

    def is_final(self, start: int) -> bool:
        return start + self.width <= self.final_until

    def is_complete(self, start: int) -> bool:
        return start + self.width <= self.complete_until

    def _agg(self, key: WKey) -> Agg:
        agg = self.aggs.get(key)
        if agg is None:
            agg = self.aggs[key] = Agg()
            if key[0] not in self.by_start:
                heapq.heappush(self._starts, key[0])
            self.by_start[key[0]].add(key)
        return agg

    def apply(self, item: Item, sign: int) -> bool:
        """Add (``sign`` 1) or remove (-1) one contribution; False if the window is final
        (then only its ``late_events`` count moves)."""
        measure, start, stage, channel, segment, seconds, entered = item
        final = self.is_final(start)
        if final and start + self.width <= self.dropped_until:
            return False  # no longer held: the caller records the late change
        for bucket in rollups(stage, channel, segment):
            key = (start, *bucket)
            agg = self._agg(key)
            self.dirty.add(key)
            if final:
                agg.late += 1
                continue
            if measure == "entries":
                agg.entries += sign
            elif measure == "conversions":
                agg.conversions += sign
                if seconds is not None:
                    if sign > 0:
                        insort(agg.seconds, seconds)
                    else:
                        agg.seconds.remove(seconds)
                if entered is not None and bucket[2] == ALL:
                    _count(agg.lags, (start - entered) // self.width, sign)
            else:
                agg.dropoffs += sign
        return not final

    def count_events(self, counts: dict[int, int]) -> None:
        """Count received events; a row carries the count when it is next written (at the
        latest when its window completes and when it is final), not on every batch."""
        for start, n in counts.items():
            self.events[start] += n

    def advance(self, complete_until: float, final_until: float) -> list[int]:
        """Move the clocks; returns the starts of the windows that became complete."""
        became: list[int] = []
        if complete_until > self.complete_until:
            became = [s for s in self.by_start if self._newly(s, complete_until)]
            self.complete_until = complete_until
        if final_until > self.final_until:
            old = self.final_until
            self.final_until = final_until
            for start, keys in self.by_start.items():
                if old < start + self.width <= final_until:
                    self.dirty.update(keys)
        for start in became:
            self.dirty.update(self.by_start[start])
        return sorted(became)

    def _newly(self, start: int, until: float) -> bool:
        return self.complete_until < start + self.width <= until

    def rows(self, version: int, lag: float) -> tuple[list[StageWindow], int]:
        """Rows for the dirty windows (each with its own version); clears them."""
        rows = self.snapshot(sorted(self.dirty), version, lag)
        self.dirty.clear()
        return rows, version + len(rows)

    def snapshot(self, keys: list[WKey], version: int, lag: float) -> list[StageWindow]:
        """Rows for ``keys``, versions counting up from ``version + 1``."""
        held = self.balances({key[1:] for key in keys})
        return [
            self.row(key, version + i, lag, held[key[1:]][key[0]]) for i, key in enumerate(keys, 1)
        ]

    def balances(self, buckets: set[Bucket]) -> dict[Bucket, dict[int, int]]:
        """For each bucket, the customers in the stage at the end of every window held."""
        starts = sorted(self.by_start)
        out: dict[Bucket, dict[int, int]] = {}
        for bucket in buckets:
            total, per = self.carried[bucket], {}
            for s in starts:
                agg = self.aggs.get((s, *bucket))
                if agg is not None:
                    total += agg.entries - agg.conversions - agg.dropoffs
                per[s] = total
            out[bucket] = per
        return out

    def row(self, key: WKey, version: int, lag: float, in_stage: int) -> StageWindow:
        start, stage, channel, segment = key
        agg = self.aggs[key]
        outcomes = agg.conversions + agg.dropoffs
        return StageWindow(
            window_start=utc(start),
            window_end=utc(start + self.width),
            stage=stage,
            channel=channel,
            segment=segment,
            entries=agg.entries,
            conversions=agg.conversions,
            dropoffs=agg.dropoffs,
            conversion_rate=agg.conversions / outcomes if outcomes else None,
            dropoff_rate=agg.dropoffs / outcomes if outcomes else None,
            in_stage=in_stage,
            median_seconds_to_convert=_quantile(agg.seconds, 0.5),
            p90_seconds_to_convert=_quantile(agg.seconds, 0.9),
            events=self.events.get(start, 0),
            ingest_lag_seconds=round(lag, 3),
            late_events=agg.late,
            is_complete=self.is_complete(start),
            is_final=self.is_final(start),
            version=version,
        )

    def evict(self) -> None:
        """Drop final windows older than ``keep_final``; carry their in-stage balance."""
        horizon = self.final_until - self.keep_final
        self.dropped_until = max(self.dropped_until, horizon)
        while self._starts and self._starts[0] + self.width <= horizon:
            start = heapq.heappop(self._starts)
            for key in self.by_start.pop(start, ()):
                agg = self.aggs.pop(key)
                self.carried[key[1:]] += agg.entries - agg.conversions - agg.dropoffs
                self.dirty.discard(key)
            self.events.pop(start, None)
