"""Stage 2, dedup: drop events whose event_id was already seen, so each id is counted once.

The state is a bounded window of the worker's recent ids (producers key by identifier, so
a retried event lands on the same partition, hence on the same worker). ClickHouse's
ReplacingMergeTree is the durable backstop: ``FINAL`` collapses any replay the window
missed, e.g. after a restart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.records import Touchpoint

DEFAULT_WINDOW = 200_000


@dataclass
class RecentIds:
    """Insertion-ordered window of the last ``capacity`` event ids."""

    capacity: int = DEFAULT_WINDOW
    ids: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def add(self, event_id: str) -> bool:
        """Record ``event_id``; True if it was new."""
        if event_id in self.ids:
            return False
        self.ids[event_id] = None
        if len(self.ids) > self.capacity:
            self.ids.popitem(last=False)
        return True


@dataclass(frozen=True)
class DedupResult:
    unique: tuple[Touchpoint, ...]
    duplicates: int


def dedup(batch: Iterable[Touchpoint], window: RecentIds) -> DedupResult:
    """Keep the first occurrence of each event_id; ``window`` is updated in place."""
    unique: list[Touchpoint] = []
    duplicates = 0
    for tp in batch:
        if window.add(tp.event_id):
            unique.append(tp)
        else:
            duplicates += 1
    return DedupResult(tuple(unique), duplicates)
