"""``touchpoint eval stitching``: how well the pipeline stitched identities, measured in
ClickHouse against a simulation's ground truth (:mod:`pipeline.producers.adversarial`).

Events are joined by ``event_id``: the valid events of the truth (malformed ones excluded;
the truth lists each event once, so duplicates are too) that ClickHouse holds. Each view
is a clustering of those events, scored by :func:`pipeline.stitching_eval.evaluate`:

1. ``stamped``: ``touchpoints FINAL``, ``customer_id`` (the identity at event time);
2. ``current``: ``touchpoints_current``, ``current_customer_id`` (after the overrides);
3. ``squashed``: ``touchpoints FINAL`` again after ``pipeline.identity_ops.squash``, which
   rewrites ``customer_id`` (only when asked for and importable).

Two bounds frame the scores:

* **best achievable** (the recall ceiling): :func:`~pipeline.stitching_eval.best_achievable`
  over each event's nodes that truly belong to its person (those of the person's truth
  components: misleading values, shared by several people, are left out);
* **identifier sets** (the precision ceiling): one cluster per distinct set of nodes. Any
  clustering that gives events with the same identifiers the same customer is a coarsening
  of it, and merging clusters never raises B-cubed precision, so no such resolver scores
  a higher precision: events of several people that carry the very same identifiers (a
  switchboard phone alone, a shared laptop's cookie, a forwarded email) cap it below 1.
  The shared-line rule is not such a resolver: it gives the lone calls from a phone on two
  calls at once a customer each (from call times, not identifiers), so it can pass this
  bound.

Events that carry at least one identifier truly of their person are *attributable*; each
view is also scored on those alone. The nodes are read from ClickHouse (the
``identifiers`` map, as the pipeline normalised and hashed them) and the truth's
identifiers are mapped with :func:`~pipeline.producers.adversarial.pipeline_node`, so a
node the truth does not know (``unknown_nodes``) points at a normalisation or hashing
difference. The loading and the squash are in :mod:`pipeline.eval_stitching_io`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from pipeline.identity_config import DEFAULT_CAPS
from pipeline.producers.adversarial import GroundTruth, pipeline_node
from pipeline.stitching_eval import CRM_PREFIX, StitchingScore, best_achievable, evaluate
from schemas.identity import kind_of

TARGET_PRECISION = 0.99
"""B-cubed precision the project must reach after the overrides."""
TARGET_RECALL_GAP = 0.01
"""How far B-cubed recall after the overrides may stay below the best achievable."""
VIEWS = {
    "stamped": "as stamped",
    "current": "after overrides",
    "squashed": "after squash",
}
TARGET_VIEW = "current"

EventNodes = Mapping[str, tuple[str, ...]]
"""Event id -> its identity nodes (``type:value``, as stored)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class TruthIndex:
    """What the evaluation needs from a ground-truth file."""

    persons: dict[str, int]
    """Valid event id -> its true customer."""
    owners: dict[str, int]
    """Pipeline node -> the customer whose truth component holds it (one owner only)."""
    known: frozenset[str]
    """Every pipeline node the truth knows (misleading ones included)."""

    @classmethod
    def of(cls, truth: GroundTruth, hash_key: bytes | None) -> TruthIndex:
        """``hash_key``: the pipeline's PII hash key (None when PII is kept in clear)."""
        persons = {e: who for e, who in truth.events.items() if e not in truth.malformed}
        owners = {
            pipeline_node(node, hash_key): who
            for who, members in truth.components
            for node in members
        }
        known = {
            pipeline_node(n, hash_key) for c in truth.customers.values() for n in c.identifiers
        }
        return cls(persons, owners, frozenset(known | owners.keys()))


class EventCounts(_Frozen):
    truth_valid: int
    """Valid events in the truth."""
    stored: int
    """Events in ``touchpoints FINAL``."""
    joined: int
    """Valid truth events found in ClickHouse: the events scored."""
    missing: int
    """Valid truth events not in ClickHouse."""
    not_in_truth: int
    """Stored events the truth does not list (another run's, or a malformed one kept)."""
    unknown_nodes: int
    """Distinct nodes on joined events that no truth identifier maps to."""
    attributable: int
    """Joined events carrying at least one identifier truly of their person."""


class ViewReport(_Frozen):
    name: str
    title: str
    available: bool = True
    reason: str = ""
    """Why the view is not available."""
    score: StitchingScore | None = None
    most_persons: int = 0
    """True customers in the most mixed cluster."""
    over_caps: int = 0
    """Clusters holding more identifiers of a type than its guardrail cap."""
    most_held: dict[str, int] = {}
    """Per capped type: the most distinct values one cluster holds."""
    recall_gap: float | None = None
    """Best achievable B-cubed recall minus this view's."""
    attributable: StitchingScore | None = None
    """The scores on the attributable events alone."""

    @classmethod
    def unavailable(cls, name: str, reason: str) -> ViewReport:
        return cls(name=name, title=VIEWS[name], available=False, reason=reason)


class Check(_Frozen):
    name: str
    target: str
    value: str
    ok: bool


class StitchingReport(_Frozen):
    truth: str
    database: str
    counts: EventCounts
    best: StitchingScore
    """The best achievable clustering, scored (precision 1 by construction)."""
    ceiling: StitchingScore
    """One cluster per distinct identifier set, scored: its precision is the ceiling."""
    views: list[ViewReport]
    checks: list[Check]
    """The project's targets, on the ``current`` view."""
    squash: dict[str, Any] | None = None
    """What the squash reported, when it ran."""
    seconds: float = 0.0

    def view(self, name: str) -> ViewReport:
        return next(v for v in self.views if v.name == name)


@dataclass(frozen=True)
class Scoring:
    """The fixed inputs every view is scored with (restricted to the joined events)."""

    persons: dict[str, int]
    nodes: EventNodes
    refused: frozenset[tuple[str, str]]
    """(event id, node): a node the resolver kept out of that event's customer."""
    best_recall: float
    caps: Mapping[str, int]
    attributable: frozenset[str]
    """Events carrying at least one identifier truly of their person."""


def joined_persons(index: TruthIndex, stored: Iterable[str]) -> dict[str, int]:
    """The truth of the valid events ClickHouse holds."""
    persons = index.persons
    return {e: persons[e] for e in stored if e in persons}


def event_counts(
    index: TruthIndex, nodes: EventNodes, joined: Mapping[str, int], attributable: int
) -> EventCounts:
    unknown = {n for e in joined for n in nodes.get(e, ()) if n not in index.known}
    return EventCounts(
        truth_valid=len(index.persons),
        stored=len(nodes),
        joined=len(joined),
        missing=len(index.persons) - len(joined),
        not_in_truth=len(nodes) - len(joined),
        unknown_nodes=len(unknown),
        attributable=attributable,
    )


def attributable(
    persons: Mapping[str, int], nodes: EventNodes, owners: Mapping[str, int]
) -> frozenset[str]:
    """The events carrying at least one identifier truly of their person."""
    return frozenset(
        e for e, who in persons.items() if any(owners.get(n) == who for n in nodes.get(e, ()))
    )


def identifier_sets(persons: Mapping[str, int], nodes: EventNodes) -> dict[str, str]:
    """One cluster per distinct set of nodes (the finest clustering by identifiers)."""
    return {e: "|".join(sorted(nodes.get(e) or (f"event:{e}",))) for e in persons}


def best_clusters(
    persons: Mapping[str, int], nodes: EventNodes, owners: Mapping[str, int]
) -> dict[str, str]:
    """The best achievable clustering: only nodes of an event's own person link it."""
    rows = (
        (event, who, [n for n in nodes.get(event, ()) if owners.get(n) == who])
        for event, who in persons.items()
    )
    return best_achievable(rows)


def score_view(name: str, predicted: Mapping[str, str], s: Scoring) -> ViewReport:
    """Score one view's clustering (event id -> customer id) against the truth."""
    clusters = {e: predicted.get(e, f"missing:{e}") for e in s.persons}
    crm_keys, held, persons = _cluster_contents(clusters, s)
    score = evaluate(clusters, s.persons, node_clusters=crm_keys)
    most_held: dict[str, int] = dict.fromkeys(s.caps, 0)
    over = 0
    for members in held.values():
        counts = Counter(kind_of(n) for n in members)
        over += any(counts[kind] > cap for kind, cap in s.caps.items())
        for kind in s.caps:
            most_held[kind] = max(most_held[kind], counts[kind])
    return ViewReport(
        name=name,
        title=VIEWS[name],
        score=score,
        most_persons=max((len(p) for p in persons.values()), default=0),
        over_caps=over,
        most_held=most_held,
        recall_gap=s.best_recall - score.bcubed_recall,
        attributable=evaluate(clusters, {e: s.persons[e] for e in s.attributable}, {}),
    )


def _cluster_contents(
    clusters: Mapping[str, str], s: Scoring
) -> tuple[dict[str, str], dict[str, set[str]], dict[str, set[int]]]:
    """Per cluster: its crm_id nodes (as ``node|cluster`` keys for
    :func:`~pipeline.stitching_eval.crm_conflicts`: every crm_id its events carry), the
    nodes it holds (its events' nodes, less those refused for the event) and its persons."""
    crm_keys: dict[str, str] = {}
    held: dict[str, set[str]] = defaultdict(set)
    persons: dict[str, set[int]] = defaultdict(set)
    for event, cluster in clusters.items():
        persons[cluster].add(s.persons[event])
        for node in s.nodes.get(event, ()):
            if node.startswith(CRM_PREFIX):
                crm_keys[f"{node}|{cluster}"] = cluster
            if (event, node) not in s.refused:
                held[cluster].add(node)
    return crm_keys, held, persons


def checks(view: ViewReport, best: StitchingScore) -> list[Check]:
    """The project's targets on one view (empty when the view is not available)."""
    if view.score is None:
        return []
    sc, gap = view.score, view.recall_gap or 0.0
    caps = ", ".join(f"{k} {v}" for k, v in DEFAULT_CAPS.items())
    return [
        Check(
            name="B-cubed precision",
            target=f">= {TARGET_PRECISION}",
            value=f"{sc.bcubed_precision:.4f}",
            ok=sc.bcubed_precision >= TARGET_PRECISION,
        ),
        Check(
            name="B-cubed recall vs best achievable",
            target=f"within {TARGET_RECALL_GAP} of {best.bcubed_recall:.4f}",
            value=f"{sc.bcubed_recall:.4f} (gap {gap:.4f})",
            ok=gap <= TARGET_RECALL_GAP,
        ),
        Check(
            name="clusters with 2 crm_ids",
            target="0",
            value=str(sc.crm_conflicts),
            ok=sc.crm_conflicts == 0,
        ),
        Check(
            name="clusters over the guardrail caps",
            target=f"0 ({caps})",
            value=str(view.over_caps),
            ok=view.over_caps == 0,
        ),
    ]
