"""How good is the stitching? Predicted clusters against the ground truth. Pure.

Both mappings go from the same keys (events or nodes) to a cluster id (predicted) or a
true person (truth). Every key of ``truth`` is scored; a key missing from ``predicted`` is a
cluster of its own; keys only in ``predicted`` are ignored.

* **B-cubed**: per key, precision is the share of its predicted cluster that is its true
  person, recall the share of its true person that is in its cluster; both averaged over
  keys (Bagga & Baldwin, 1998).
* **Pairwise**: over pairs of keys, precision is the share of pairs put together that
  truly belong together, recall the share of true pairs put together; counted from the
  contingency table with n(n-1)/2, never pair by pair.

:func:`best_achievable` gives the clustering that only links identifiers of one true
person: its recall is the ceiling of any resolver that is never wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

CRM_PREFIX = "crm_id:"


class StitchingScore(BaseModel):
    """The scores of one predicted clustering."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    items: int
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f1: float
    predicted_clusters: int
    true_persons: int
    largest_cluster: int
    impure_clusters: int
    """Predicted clusters holding more than one true person."""
    split_persons: int
    """True persons spread over several predicted clusters."""
    crm_conflicts: int
    """Predicted clusters holding two different crm_id values."""

    def render(self) -> str:
        """The scores as an aligned two-column table."""
        rows = [
            ("items", str(self.items)),
            ("B-cubed precision", f"{self.bcubed_precision:.4f}"),
            ("B-cubed recall", f"{self.bcubed_recall:.4f}"),
            ("B-cubed F1", f"{self.bcubed_f1:.4f}"),
            ("pairwise precision", f"{self.pairwise_precision:.4f}"),
            ("pairwise recall", f"{self.pairwise_recall:.4f}"),
            ("pairwise F1", f"{self.pairwise_f1:.4f}"),
            ("predicted clusters", str(self.predicted_clusters)),
            ("true persons", str(self.true_persons)),
            ("largest cluster", str(self.largest_cluster)),
            ("clusters with >1 person", str(self.impure_clusters)),
            ("persons split", str(self.split_persons)),
            ("clusters with 2 crm_ids", str(self.crm_conflicts)),
        ]
        width = max(len(name) for name, _ in rows)
        lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  {'-' * 6}"]
        lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
        return "\n".join(lines)


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 2 * precision * recall / total if total else 0.0


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def _ratio(num: int, den: int) -> float:
    return num / den if den else 1.0


def evaluate(
    predicted: Mapping[Any, Hashable],
    truth: Mapping[Any, Hashable],
    node_clusters: Mapping[str, Hashable] | None = None,
) -> StitchingScore:
    """Score ``predicted`` against ``truth``. ``node_clusters`` (node -> predicted cluster) is
    used to count clusters with two crm_id nodes; by default ``predicted`` itself, when its
    keys are nodes."""
    cells: Counter[tuple[Hashable, Hashable]] = Counter()
    for key, person in truth.items():
        cluster = predicted.get(key, ("__alone__", key))
        cells[(cluster, person)] += 1
    sizes: Counter[Hashable] = Counter()
    persons: Counter[Hashable] = Counter()
    for (cluster, person), n in cells.items():
        sizes[cluster] += n
        persons[person] += n
    items = len(truth)
    both = sum(n * n / sizes[c] for (c, _), n in cells.items())
    precision = both / items if items else 1.0
    recall = sum(n * n / persons[p] for (_, p), n in cells.items()) / items if items else 1.0
    together = sum(_pairs(n) for n in cells.values())
    pair_p = _ratio(together, sum(_pairs(n) for n in sizes.values()))
    pair_r = _ratio(together, sum(_pairs(n) for n in persons.values()))
    per_cluster = Counter(c for c, _ in cells)
    per_person = Counter(p for _, p in cells)
    return StitchingScore(
        items=items,
        bcubed_precision=precision,
        bcubed_recall=recall,
        bcubed_f1=_f1(precision, recall),
        pairwise_precision=pair_p,
        pairwise_recall=pair_r,
        pairwise_f1=_f1(pair_p, pair_r),
        predicted_clusters=len(sizes),
        true_persons=len(persons),
        largest_cluster=max(sizes.values(), default=0),
        impure_clusters=sum(1 for n in per_cluster.values() if n > 1),
        split_persons=sum(1 for n in per_person.values() if n > 1),
        crm_conflicts=crm_conflicts(node_clusters if node_clusters is not None else predicted),
    )


def crm_conflicts(node_clusters: Mapping[Any, Hashable]) -> int:
    """Clusters holding two different crm_id nodes (keys that are not nodes are ignored)."""
    crm: Counter[Hashable] = Counter(
        cluster
        for node, cluster in node_clusters.items()
        if isinstance(node, str) and node.startswith(CRM_PREFIX)
    )
    return sum(1 for n in crm.values() if n > 1)


def best_achievable(
    links_truth: Mapping[str, tuple[Hashable, Sequence[str]]]
    | Iterable[tuple[str, Hashable, Sequence[str]]],
) -> dict[str, str]:
    """The best clustering of events a resolver could reach without ever being wrong.

    ``links_truth``: per event, its true person and its nodes (event_id -> (person, nodes),
    or (event_id, person, nodes) triples). Only identifiers of the same true person are
    linked: a phone shared by two people links each person's own events, never the two.
    Returns event_id -> component id.
    """
    rows = (
        [(e, p, n) for e, (p, n) in links_truth.items()]
        if isinstance(links_truth, Mapping)
        else list(links_truth)
    )
    parent: dict[tuple[Hashable, str], tuple[Hashable, str]] = {}

    def find(key: tuple[Hashable, str]) -> tuple[Hashable, str]:
        root = parent.setdefault(key, key)
        while root != parent[root]:
            root = parent[root]
        while key != root:
            key, parent[key] = parent[key], root
        return root

    for event_id, person, nodes in rows:
        keys = [(person, node) for node in nodes] or [(person, f"event:{event_id}")]
        first = find(keys[0])
        for key in keys[1:]:
            other = find(key)
            if other != first:
                parent[other] = first
    return {
        event_id: "|".join(map(str, find((person, nodes[0] if nodes else f"event:{event_id}"))))
        for event_id, person, nodes in rows
    }
