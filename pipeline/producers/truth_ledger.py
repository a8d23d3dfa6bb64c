"""The ground truth as the simulation happens: who truly owns which identifier, the stage
path of every customer, and the best achievable identity components (identifiers linked by
valid events of their one true owner; values with several owners are misleading and left
out)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise


# --- ground truth ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CustomerTruth:
    segment: str
    arrived: float
    stages: tuple[tuple[str, float], ...] = ()
    """(stage, seconds since the start it was entered)."""
    outcome: str = "censored"
    """``completed`` (reached advocacy), ``dropped``, or ``censored`` (cut by the run's end)."""
    ended_at: float | None = None
    causes: tuple[str, ...] = ()
    """Drop-off causes present at the stage where the customer dropped."""


_Record = tuple[str, float, tuple[tuple[str, float], ...], str, float | None, tuple[str, ...]]
"""A :class:`CustomerTruth` as a plain tuple of atoms: the garbage collector stops tracking
those, so a ledger of many customers does not slow every collection down."""


class _Customers(Mapping[int, CustomerTruth]):
    def __init__(self, records: dict[int, _Record]) -> None:
        self._records = records

    def __getitem__(self, who: int) -> CustomerTruth:
        return CustomerTruth(*self._records[who])

    def __iter__(self) -> Iterator[int]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


class TruthLedger:
    """Identifier ownership, stage paths and identity links, as the simulation happens."""

    def __init__(self, track: bool = True) -> None:
        self.track = track
        """Off: nothing is recorded (a long demo run needs no truth and no memory for it)."""
        self._records: dict[int, _Record] = {}
        self.customers: Mapping[int, CustomerTruth] = _Customers(self._records)
        """Each customer's truth (a read-only view)."""
        self.types: dict[str, str] = {}
        self.flags: dict[str, str] = {}
        self.owners: dict[str, set[int]] = {}
        """Misleading values: those with more than one true owner."""
        self._owner: dict[str, int] = {}
        self._alias: dict[str, str] = {}
        self._seen: dict[str, None] = {}
        self._edges: dict[tuple[str, str], None] = {}
        """Dicts of atoms, not sets: the garbage collector can stop tracking them."""

    def start(self, who: int, segment: str, t: float) -> None:
        if self.track:
            self._records[who] = (segment, t, (), "censored", None, ())

    def own(self, id_type: str, value: str, who: int, kind: str | None = None) -> None:
        if not self.track:
            return
        prev = self._owner.setdefault(value, who)
        self.types[value] = id_type
        if kind is not None:
            self.flags[value] = kind
        if prev != who:
            self.owners.setdefault(value, {prev}).add(who)

    def alias(self, shown: str, value: str) -> None:
        """``shown`` is how ``value`` appears in a payload (another format or case)."""
        if self.track:
            self._alias[shown] = value

    def observe(self, who: int, ids: dict[str, str]) -> None:
        """A valid event of ``who`` carried ``ids``: their own values are linked."""
        if not self.track:
            return
        owner, alias = self._owner, self._alias
        if len(ids) == 1:
            for value in ids.values():
                value = alias.get(value, value)
                if owner.get(value) == who:
                    self._seen[value] = None
            return
        mine = [v for v in map(alias.get, ids.values(), ids.values()) if owner.get(v) == who]
        self._seen.update(dict.fromkeys(mine))
        self._edges.update(dict.fromkeys(pairwise(mine)))

    def enter(self, who: int, stage: str, t: float) -> None:
        if self.track:
            seg, arrived, stages, outcome, ended, causes = self._records[who]
            self._records[who] = (seg, arrived, (*stages, (stage, t)), outcome, ended, causes)

    def finish(self, who: int, outcome: str, t: float, causes: tuple[str, ...] = ()) -> None:
        if self.track:
            seg, arrived, stages, *_ = self._records[who]
            self._records[who] = (seg, arrived, stages, outcome, t, causes)

    def holdings(self) -> dict[int, list[str]]:
        """Each customer's ``type:value`` identifiers (shared ones listed for every owner)."""
        held: dict[int, list[str]] = {}
        for value, who in self._owner.items():
            for owner in self.owners.get(value, (who,)):
                held.setdefault(owner, []).append(f"{self.types[value]}:{value}")
        return held

    def owner_of(self, value: str) -> int | None:
        return self._owner.get(self._alias.get(value, value))

    def components(self) -> list[tuple[int, list[str]]]:
        """The best achievable identity clusters: (customer, sorted ``type:value`` list)."""
        parent = {v: v for v in self._seen if v not in self.owners}

        def find(v: str) -> str:
            while parent[v] != v:
                parent[v] = parent[parent[v]]
                v = parent[v]
            return v

        for a, b in self._edges:
            if a in parent and b in parent:
                parent[find(a)] = find(b)
        groups: dict[str, list[str]] = {}
        for v in parent:
            groups.setdefault(find(v), []).append(f"{self.types[v]}:{v}")
        return sorted((self._owner[root], sorted(vs)) for root, vs in groups.items())
