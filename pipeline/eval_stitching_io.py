"""The reading side of ``touchpoint eval stitching``: the views from ClickHouse, the truth
file, the optional squash, and the whole evaluation (:func:`evaluate_stitching`).

Only reads, except with ``squash=True``: then ``pipeline.identity_ops.squash`` rewrites
``touchpoints.customer_id`` (after the other two views are read) and the third view is
``touchpoints FINAL`` again.
"""

from __future__ import annotations

import dataclasses
import importlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from pipeline.eval_stitching import (
    TARGET_VIEW,
    Scoring,
    StitchingReport,
    TruthIndex,
    ViewReport,
    attributable,
    best_clusters,
    checks,
    event_counts,
    identifier_sets,
    joined_persons,
    score_view,
)
from pipeline.identity_config import DEFAULT_CAPS
from pipeline.producers.adversarial import load_ground_truth
from pipeline.stitching_eval import evaluate

STAMPED_SQL = """
SELECT event_id, customer_id,
       arrayMap((k, v) -> concat(k, ':', v), mapKeys(identifiers), mapValues(identifiers))
FROM touchpoints FINAL
"""
CURRENT_SQL = "SELECT event_id, current_customer_id FROM touchpoints_current"
REFUSED_SQL = "SELECT DISTINCT event_id, node FROM identity_refusals"
SQUASH_MODULE = "pipeline.identity_ops"


class Client(Protocol):
    """What is used of a clickhouse-connect client: ``query(sql).result_rows``."""

    def query(self, query: str) -> Any: ...


def read_stamped(client: Client) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """(event id -> customer id as stamped, event id -> its nodes) from ``touchpoints``."""
    clusters: dict[str, str] = {}
    nodes: dict[str, tuple[str, ...]] = {}
    for event_id, customer, event_nodes in client.query(STAMPED_SQL).result_rows:
        clusters[event_id] = customer
        nodes[event_id] = tuple(event_nodes)
    return clusters, nodes


def read_current(client: Client) -> dict[str, str]:
    """Event id -> customer id after the overrides (``touchpoints_current``)."""
    return {event_id: customer for event_id, customer in client.query(CURRENT_SQL).result_rows}


def read_refused(client: Client) -> frozenset[tuple[str, str]]:
    """(event id, node) pairs the resolver refused (``identity_refusals``)."""
    return frozenset((e, n) for e, n in client.query(REFUSED_SQL).result_rows)


def as_dict(report: Any) -> dict[str, Any]:
    """Whatever the squash returned, as JSON-ready data."""
    if isinstance(report, BaseModel):
        return report.model_dump(mode="json")
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(report).items()}
    if isinstance(report, Mapping):
        return {str(k): _plain(v) for k, v in report.items()}
    return {"report": repr(report)}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


def squashed_view(
    client: Client, database: str, scoring: Scoring, enabled: bool
) -> tuple[ViewReport, dict[str, Any] | None]:
    """Run the squash (if asked for and importable) and score ``touchpoints FINAL`` again."""
    try:
        squash = getattr(importlib.import_module(SQUASH_MODULE), "squash", None)
    except ImportError as exc:
        return ViewReport.unavailable("squashed", f"{SQUASH_MODULE} is not importable: {exc}"), None
    if squash is None:
        return ViewReport.unavailable("squashed", f"{SQUASH_MODULE} has no squash()"), None
    if not enabled:
        reason = "not run: pass --squash (it rewrites touchpoints.customer_id)"
        return ViewReport.unavailable("squashed", reason), None
    started = time.monotonic()
    try:
        outcome = as_dict(squash(client, database))
    except Exception as exc:  # its failure is a finding to report, not a crash of the eval
        return ViewReport.unavailable("squashed", f"squash failed: {exc!r}"), None
    outcome["seconds"] = round(time.monotonic() - started, 3)
    clusters, _ = read_stamped(client)
    return score_view("squashed", clusters, scoring), outcome


def evaluate_stitching(
    client: Client,
    database: str,
    truth_path: Path,
    hash_key: bytes | None,
    *,
    squash: bool = False,
    caps: Mapping[str, int] = DEFAULT_CAPS,
) -> StitchingReport:
    """Score every view of ``database`` against the ground truth at ``truth_path``.

    ``hash_key``: the pipeline's PII hash key, None when it keeps PII in clear.
    """
    started = time.monotonic()
    index = TruthIndex.of(load_ground_truth(truth_path), hash_key)
    stamped, nodes = read_stamped(client)
    current = read_current(client)
    persons = joined_persons(index, nodes)
    best = evaluate(best_clusters(persons, nodes, index.owners), persons)
    own = attributable(persons, nodes, index.owners)
    scoring = Scoring(persons, nodes, read_refused(client), best.bcubed_recall, caps, own)
    views = [score_view("stamped", stamped, scoring), score_view("current", current, scoring)]
    third, outcome = squashed_view(client, database, scoring, squash)
    views.append(third)
    target = next(v for v in views if v.name == TARGET_VIEW)
    return StitchingReport(
        truth=str(truth_path),
        database=database,
        counts=event_counts(index, nodes, persons, len(own)),
        best=best,
        ceiling=evaluate(identifier_sets(persons, nodes), persons),
        views=views,
        checks=checks(target, best),
        squash=outcome,
        seconds=round(time.monotonic() - started, 3),
    )
