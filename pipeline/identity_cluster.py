"""One cluster of the identity graph: what is kept at its root.

Members are a dict node -> type, all strings, so that the many small clusters of a big
graph give the garbage collector nothing to traverse; counts per type and the values of a
unique type are read from it (clusters stay small when guardrails are on).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from schemas.events import IDENTIFIER_TYPES
from schemas.identity import fallback_customer_id


def survivor(parts: list[Cluster], new: Sequence[str], at: datetime) -> tuple[datetime, str, bool]:
    """(first_seen, customer id, the new nodes won) of a union: the smallest (first_seen,
    customer id) of its parts, the new nodes being one part dated ``at`` with the fallback id
    of the first of them."""
    best: tuple[datetime, str] | None = None
    for part in parts:
        if (
            best is None
            or part.first_seen < best[0]
            or (part.first_seen == best[0] and part.customer_id < best[1])
        ):
            best = (part.first_seen, part.customer_id)
    if new and (best is None or at <= best[0]):
        candidate = (at, fallback_customer_id(new[0]))
        if best is None or candidate < best:
            return at, candidate[1], True
    assert best is not None, "union of nothing"
    return min(best[0], at), best[1], False


_KINDS = {kind: kind for kind in IDENTIFIER_TYPES}


def node_kind(node: str) -> str:
    """The type of a node, as one shared string per type."""
    kind = node.partition(":")[0]
    return _KINDS.get(kind, kind)


class Cluster:
    """What the graph knows about one cluster, kept at its root."""

    __slots__ = ("_customer", "_named", "absorbed", "first_seen", "members")

    def __init__(
        self,
        customer_id: str,
        first_seen: datetime,
        members: dict[str, str] | None = None,
        absorbed: tuple[str, ...] = (),
    ) -> None:
        self._customer = customer_id
        self._named = bool(customer_id)
        self.first_seen = first_seen
        """The earliest event time of the cluster's events."""
        self.members: dict[str, str] = members if members is not None else {}
        """Member node -> its type, in joining order (all strings: no work for the GC)."""
        self.absorbed = absorbed
        """Customer ids merged into this one, at any depth."""

    @property
    def customer_id(self) -> str:
        """The customer id; "" at creation means the fallback id of the only node, computed
        when first asked (most singletons never are)."""
        if not self._customer:
            self._customer = fallback_customer_id(next(iter(self.members)))
        return self._customer

    @customer_id.setter
    def customer_id(self, value: str) -> None:
        self._customer = value
        self._named = True

    @property
    def explicit_customer(self) -> str:
        """The customer id if it was set, "" if it is still the lone node's fallback id."""
        return self._customer if self._named else ""

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def nodes(self) -> list[str]:
        return list(self.members)

    def of_kind(self, kind: str) -> list[str]:
        """The member nodes of one type (for a unique type: its values)."""
        return [node for node, k in self.members.items() if k == kind]

    def count(self, kind: str) -> int:
        return sum(1 for k in self.members.values() if k == kind)

    def identified(self, cookie_types: frozenset[str]) -> bool:
        """True if the cluster holds more than cookies."""
        return any(kind not in cookie_types for kind in self.members.values())
