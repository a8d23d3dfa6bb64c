"""Scaling out to three workers, and losing one mid-run, gives the state of one worker.

One adversarial simulated input (late, out-of-order, duplicate and malformed events; keyed by
person as ``test_scale_identity`` produces it) goes, paced, through two fresh pipelines with
6 partitions (own topics, consumer group and database):

* run "one": one worker;
* run "three": three workers; once a third of the valid events are stored, the worker that
  holds the resolver (the one-partition links topic; found in the worker logs) is SIGKILLed
  and NOT replaced: the two survivors take its partitions over (the resolver rebuilds the
  identity graph from its changelog, the journey stage its states; the metrics stage too
  when the victim held it) and finish the run.

Each run is judged by the fault suite's oracle (every valid event stored once, every
malformed one dead-lettered; final metric windows equal their recomputation). After each run
settles (every event stored, the marker barrier through the links topic, the tables quiet),
the runs are compared on what is deterministic:

* the clusters as sets of events (the order-dependent guardrail allowance of
  ``test_scale_identity``), then their canonical ids (``MIN_SAME_ID``: the survivor rule
  depends on the order in which the resolver sees a cluster's identifiers);
* the live ``stage_transitions``, ``journeys`` and ``customers`` rows (``FINAL``) of the
  clusters both runs agree on, with the same id, without their journey ids
  (``JOURNEY_IDS``), and each journey as the set of its transitions; no live transition
  under a re-attributed id;
* the final stage-metric totals by stage, ``stage_metrics`` + ``late_events``: equal, but
  for at most the transitions of the customers whose clusters differ (stored alone is
  printed: which changes arrive after their window is final depends on timing).

The figures are printed (run with ``-s``).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

# pytest's default (prepend) import mode puts this directory on sys.path
from test_scale_identity import (  # type: ignore[import-not-found]
    Run,
    _barrier,
    _differences,
    _events_in,
    _person_key,
    _read,
    _unexplained,
)

from pipeline.producers.simulator import SimEvent, SimulationConfig, simulate
from pipeline.testing.faults import (
    SteadyProducer,
    check_delivery,
    check_metrics,
    clickhouse,
    stored_ids,
    wait_drained,
)
from pipeline.testing.kafka import free_port
from pipeline.testing.snapshot import (
    Row,
    Snapshot,
    journeys_of,
    read_snapshot,
    without_journey_ids,
)
from pipeline.testing.stack import Process, prepare, settings_for_test, wait_for, worker_ready

pytestmark = pytest.mark.integration

CUSTOMERS = 2000
PARTITIONS = 6
SEED = 31
PRODUCE_SECONDS = 30.0
DRAIN_TIMEOUT = 240.0
MIN_IDENTICAL = 0.99
"""As in test_restart_state: a kill replays links in another order, and the order in which
the resolver sees two people's links to a shared identifier decides who keeps it."""
MIN_SAME_ID = 0.995
"""Share of the events of agreed clusters under the same canonical id. The survivor of a
merge is the cluster first seen earlier *among the events the resolver has seen*: when a
cluster's oldest identifier reaches the resolver after the merge (another person's partition,
or a replay after the kill, ordered it later), the other id survives and is kept. Measured:
5 of 19,091 events (1 cluster: cookie fallback id in one run, user_id's in the other)."""
JOURNEY_IDS = """A journey id is a hash of the customer id it was first seen under and its start; it
is kept when a merge moves the journey to the survivor (the stored touchpoints refer to it),
so it depends on the id events were stamped with, which depends on timing. Rows are compared
without it, and the journeys as the sets of their transitions."""
SMALL_BATCHES = {"batch_max_events": 200, "sink_max_rows": 400}
"""Small ingest batches and inserts, so the stored count grows in steps and the kill lands
mid-stream."""
RESOLVER_LOG = re.compile(r"^\[([^\]]+)\].*resolver: graph rebuilt", re.M)


def _input() -> tuple[list[SimEvent], int]:
    """Event times from 3 h to 1 h ago: the barrier (now) makes every window final (the
    allowed lateness is 30 min)."""
    start = datetime.now(UTC) - timedelta(hours=3)
    config = SimulationConfig(seed=SEED, start=start, customers=CUSTOMERS, adversarial=True)
    events = list(simulate(config))
    valid = len({e.event_id for e in events if e.malformed is None and e.event_id})
    return events, valid


@dataclass
class Outcome:
    run: Run
    snap: Snapshot
    problems: list[str]
    figures: dict[str, Any]


def _resolver_holder(workers: list[Process]) -> Process:
    """The live worker that last rebuilt the resolver graph (took the links partition)."""

    def last(worker: Process) -> str:
        return max(RESOLVER_LOG.findall(worker.log_tail(10_000_000)), default="")

    holder = max((w for w in workers if w.alive), key=last)
    assert last(holder), "no worker logged taking the resolver partition"
    return holder


def _start(settings: Any, start: Any, count: int) -> tuple[list[Process], list[int]]:
    ports = [settings.worker_web_port] + [free_port() for _ in range(1, count)]
    workers = [start(settings, i, wait=False, worker_web_port=p) for i, p in enumerate(ports)]
    for worker in workers:
        wait_for(lambda: worker_ready(worker), 120, "worker ready")  # noqa: B023
    return workers, ports


def _pipeline(settings: Any, events: list[SimEvent], valid: int, start: Any, count: int) -> Outcome:
    began = time.monotonic()
    workers, ports = _start(settings, start, count)
    producer = SteadyProducer(settings, events, PRODUCE_SECONDS, key=_person_key)
    producer.start()
    client = clickhouse(settings)
    figures: dict[str, Any] = {"workers": count}
    if count > 1:
        stored = wait_for(lambda: (n := stored_ids(client)) >= valid // 3 and n, 120, "a third")
        victim = _resolver_holder(workers)
        victim.kill()
        index = workers.index(victim)
        figures |= {"killed worker": index, "killed at stored": stored}
        ports.pop(index)
        workers.pop(index)
    producer.finish(PRODUCE_SECONDS + 120)
    figures["drain s"] = round(wait_drained(client, events, DRAIN_TIMEOUT), 1)
    delivery = check_delivery(client, events)
    _barrier(settings, client)
    problems = delivery.problems() + check_metrics(client, settings, events)  # waits for quiet
    run = _read(client, time.monotonic() - began)
    snap = read_snapshot(client)
    alive = [w.alive for w in workers]
    if not all(alive):
        problems.append(
            f"a worker died by itself: {[w.log_path.name for w in workers if not w.alive]}"
        )
    figures["raw events read per surviving worker"] = [
        _events_in(p) for p, up in zip(ports, alive, strict=True) if up
    ]
    figures["settled s"] = round(run.seconds, 1)
    figures |= delivery.figures()
    for worker in workers:
        worker.stop()
    return Outcome(run, snap, problems, figures)


def _of(rows: frozenset[Row], customers: set[str]) -> frozenset[Row]:
    return frozenset(row for row in rows if row[0] in customers)


def _diff(name: str, a: frozenset[Row], b: frozenset[Row], failures: list[str]) -> None:
    print(f"{name}: {len(a)} vs {len(b)} rows, {len(a - b)} only in one, {len(b - a)} in three")
    for row in sorted(a ^ b, key=str)[:4]:
        print(f"    {'one' if row in a else 'three'}: {row}")
    if not a:
        failures.append(f"{name}: no rows")
    if a ^ b:
        failures.append(f"{name}: {len(a ^ b)} rows in one run only")


@pytest.mark.timeout(900)
def test_three_workers_one_killed_give_the_state_of_one(
    kafka_bootstrap: str, clickhouse_url: str, start_worker: Any, tmp_path: Path
) -> None:
    events, valid = _input()
    outcomes = []
    for name, count in (("one", 1), ("three", 3)):
        settings = settings_for_test(
            kafka_bootstrap, clickhouse_url, tmp_path / name, partitions=PARTITIONS, **SMALL_BATCHES
        )
        prepare(settings)
        outcomes.append(_pipeline(settings, events, valid, start_worker, count))
    a, b = outcomes
    print(f"\n{CUSTOMERS} customers, {len(events)} messages, {valid} valid events")
    for o in outcomes:
        print(f"  {o.figures}; oracle problems: {o.problems}")
    assert "killed worker" in b.figures and 0 < b.figures["killed at stored"] < valid
    assert len(a.run.clusters) == len(b.run.clusters) == valid
    failures = [f"oracle, run {n}: {p}" for n, o in (("one", a), ("three", b)) for p in o.problems]
    agreed = _compare_clusters(a, b, valid, failures)
    _compare_rows(a, b, agreed, failures)
    _compare_metrics(a, b, set(a.run.clusters) - _events_of(agreed, a), failures)
    assert not failures, "\n".join(failures)


def _compare_clusters(a: Outcome, b: Outcome, valid: int, failures: list[str]) -> set[str]:
    """Clusters as sets of events, then their canonical ids; returns the customer ids of
    the clusters both runs agree on, with the same id."""
    one, three = a.run, b.run
    differ = _differences(one, three)
    identical = 1 - len(differ) / valid
    print(
        f"clusters {len(set(one.clusters.values()))} vs {len(set(three.clusters.values()))}; "
        f"{len(differ)} events in a different cluster ({identical:.4%} identical); "
        f"refusals {dict(one.refusals)} vs {dict(three.refusals)}"
    )
    unexplained = _unexplained(one, three, differ, ("one", "three"))
    if unexplained:
        failures.append(f"cluster differences without a refusal: {sorted(unexplained)[:10]}")
    if identical < MIN_IDENTICAL:
        failures.append(f"only {identical:.4%} of the events in the same cluster")
    agreed_events = set(one.clusters) - differ
    other_id = {e for e in agreed_events if a.snap.current[e] != b.snap.current[e]}
    same = 1 - len(other_id) / len(agreed_events)
    renamed = {(a.snap.current[e], b.snap.current[e]) for e in other_id}
    print(
        f"canonical ids: {len(other_id)} events of agreed clusters under another id "
        f"({same:.4%} the same), clusters (one, three): {sorted(renamed)[:5]}"
    )
    if same < MIN_SAME_ID:
        failures.append(f"only {same:.4%} of the events under the same canonical id")
    return {a.snap.current[e] for e in agreed_events - other_id}


def _compare_rows(a: Outcome, b: Outcome, agreed: set[str], failures: list[str]) -> None:
    """The live journey rows of the agreed customers, as sets, without the journey ids
    (see JOURNEY_IDS); then each journey as the set of its transitions."""
    for table in ("transitions", "journeys", "customers"):
        rows_a, rows_b = _of(getattr(a.snap, table), agreed), _of(getattr(b.snap, table), agreed)
        same = len(rows_a & rows_b) / max(1, len(rows_a))
        print(f"{table}: {same:.2%} of the rows identical with their journey ids")
        plain_a, plain_b = without_journey_ids(rows_a), without_journey_ids(rows_b)
        _diff(f"{table} (no journey id)", plain_a, plain_b, failures)
    journeys_a = journeys_of(_of(a.snap.transitions, agreed))
    journeys_b = journeys_of(_of(b.snap.transitions, agreed))
    _diff("journeys as sets of transitions", journeys_a, journeys_b, failures)
    stale = (a.run.stale.total(), b.run.stale.total())
    print(f"live transitions under re-attributed ids: {stale[0]} vs {stale[1]}")
    if any(stale):
        failures.append(f"live transitions under re-attributed ids: {stale}")


def _events_of(customers: set[str], o: Outcome) -> set[str]:
    return {e for e, c in o.snap.current.items() if c in customers}


def _slack(o: Outcome, events: set[str]) -> Counter[str]:
    """Live transitions per stage of the customers holding ``events``: how far the totals
    of a stage may move when those customers' clusters differ (a row counts at most once
    per measure)."""
    customers = {o.snap.current[e] for e in events}
    return Counter(row[3] for row in o.snap.transitions if row[0] in customers)


def _compare_metrics(a: Outcome, b: Outcome, differ: set[str], failures: list[str]) -> None:
    """Final stage-metric totals by stage over the windows final in both runs. Stored +
    late (what the windows add up to) must be equal, but for the transitions of the
    customers whose clusters differ (``differ``: their events); stored alone is printed
    (which changes reach a window after it is final, in late_events instead, is timing)."""
    until = min(a.snap.final_until, b.snap.final_until)
    for late in (True, False):
        ta, tb = a.snap.totals(until, late), b.snap.totals(until, late)
        label = "stored + late" if late else "stored"
        print(f"metric totals ({label}) (entries, conversions, dropoffs): one {ta}; three {tb}")
    ta, tb = a.snap.totals(until, True), b.snap.totals(until, True)
    slack = _slack(a, differ) + _slack(b, differ)
    print(f"allowed difference per stage (transitions of differing clusters): {dict(slack)}")
    for stage in ta.keys() | tb.keys():
        gaps = [
            abs(x - y)
            for x, y in zip(ta.get(stage, (0,) * 3), tb.get(stage, (0,) * 3), strict=True)
        ]
        if max(gaps) > slack[stage]:
            failures.append(f"metric totals (stored + late) of {stage} differ by {gaps}")
