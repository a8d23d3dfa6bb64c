"""Killing and restarting a worker mid-stream gives the same final state.

One adversarial simulated input (seed 29, keyed by person as ``test_scale_identity``
produces it) goes through two fresh pipelines (own topics, consumer group and database):

* run A: one worker, uninterrupted;
* run B: one worker; once about half of the valid events are stored in ``touchpoints`` it is
  SIGKILLed (no clean-up, no final commit) and a new worker is started, which rebuilds the
  resolver graph from the identity changelog and the journey states from the journey
  changelog, and replays whatever was not acknowledged.

After each run settles (every valid event stored, then the marker barrier through the links
topic), the test compares what ``test_scale_identity`` compares: every valid event stored
exactly once (``FINAL``), the partition of events induced by
``touchpoints_current.current_customer_id`` (as sets of events, never by id), allowing only
the order-dependent guardrail differences documented there (every differing event in a
cluster holding an event whose link was refused in one of the runs, >= 99.5% identical), and
the stage transitions per (cluster, to_stage) on the clusters both runs agree on. It also
checks that no live ``stage_transitions`` row is kept under an id that ``identity_overrides``
maps to another customer. The figures are printed (run with ``-s``).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

# pytest's default (prepend) import mode puts this directory on sys.path
from test_scale_identity import (  # type: ignore[import-not-found]
    BARRIER_PREFIX,
    TIMEOUT,
    Run,
    _barrier,
    _differences,
    _produce,
    _read,
    _transition_label,
    _unexplained,
)

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.producers.simulator import SimEvent, SimulationConfig, simulate
from pipeline.testing.stack import prepare, settings_for_test, wait_for, worker_ready

CUSTOMERS = 1000
MIN_IDENTICAL_RESTART = 0.985
"""Measured (9,774 valid events, 4 runs): 100% identical in 3, 99.35% in 1 (64 events in 4
clusters, refusals 8 vs 7 ``unique_conflict``, every one explained); 98.88% in a fifth, in
a test run of three xdist processes on two CPUs (every difference explained). The uninterrupted run
alone varies too (7 or 8 refusals between runs): the order in which the resolver sees two
people's links to a shared identifier decides who keeps it; a replay after the kill changes
that order, so the 99.5% of test_scale_identity is not kept here."""
MAX_STALE_AFTER_RESTART = 0
"""Was a known bug (measured: 0, 0, 1, 3 and 5 rows, always version 1, never in the
uninterrupted run): the batch the SIGKILL cut (rows sent, changelog entry not) was replayed in
other batches, and a new journey's id came from the first event *by time* of its batch, so the
replay keyed the journey otherwise and the rows sent before the kill stayed live (seen under
merged-away ids, whose retraction covered only the replay's keys). Journeys are now opened in
arrival order (``pipeline.journey._ingest``)."""
SEED = 29
SMALL_BATCHES = {"batch_max_events": 200, "sink_max_rows": 400}
"""Both runs: small ingest batches and inserts, so the stored count grows in steps and the
kill lands mid-stream (with the defaults the whole input is one insert)."""
NOT_BARRIER = f"NOT startsWith(event_id, '{BARRIER_PREFIX}')"


def _input() -> tuple[list[SimEvent], int]:
    start = datetime.now(UTC) - timedelta(hours=2)
    config = SimulationConfig(seed=SEED, start=start, customers=CUSTOMERS, adversarial=True)
    events = list(simulate(config))
    valid = len({e.event_id for e in events if e.malformed is None and e.event_id})
    return events, valid


def _stored(client: Any) -> int:
    sql = f"SELECT uniqExact(event_id) FROM touchpoints WHERE {NOT_BARRIER}"
    return int(client.query(sql).result_rows[0][0])


def _stale_under_overridden(client: Any) -> list[tuple[Any, ...]]:
    """Live stage transitions kept under an id that identity_overrides maps elsewhere. The
    barrier's own events are left out: its second marker merges the first one's customer as
    the very last link, and the retraction of the first marker's transition may still be on
    its way when the barrier is seen (measured once in CI: ``barrier-1-…``, version 1)."""
    sql = (
        "SELECT customer_id, to_stage, event_id, version FROM stage_transitions FINAL "
        f"WHERE is_deleted = 0 AND {NOT_BARRIER} AND customer_id IN "
        "(SELECT customer_id FROM identity_overrides FINAL "
        " WHERE is_deleted = 0 AND current_customer_id != customer_id)"
    )
    return list(client.query(sql).result_rows)


class Outcome:
    def __init__(
        self, run: Run, rows: int, rows_final: int, stale: list[tuple[Any, ...]], killed_at: int
    ) -> None:
        self.run, self.rows, self.rows_final = run, rows, rows_final
        self.stale, self.killed_at = stale, killed_at


def _pipeline(settings: Any, events: list[SimEvent], valid: int, start: Any, kill: bool) -> Outcome:
    began = time.monotonic()
    worker = start(settings, 0)
    client = connect(ClickHouseConfig.from_settings(settings))
    producer = threading.Thread(target=_produce, args=(settings, events))
    producer.start()
    killed_at = -1
    if kill:
        half = wait_for(
            lambda: (n := _stored(client)) >= valid // 2 and n,
            TIMEOUT,
            "half of the events",
            interval=0.02,
        )
        worker.kill()
        killed_at = half
        producer.join()
        worker = start(settings, 1, wait=False)
        wait_for(lambda: worker_ready(worker), 90, "the restarted worker ready")
    producer.join()
    wait_for(lambda: _stored(client) >= valid, TIMEOUT, "every event")
    _barrier(settings, client)
    run = _read(client, time.monotonic() - began)
    count = f"SELECT count() FROM touchpoints WHERE {NOT_BARRIER}"
    rows = int(client.query(count).result_rows[0][0])
    final = f"SELECT count() FROM touchpoints FINAL WHERE {NOT_BARRIER}"
    rows_final = int(client.query(final).result_rows[0][0])
    stale = _stale_under_overridden(client)
    worker.stop()
    return Outcome(run, rows, rows_final, stale, killed_at)


@pytest.mark.timeout(300)
def test_sigkill_and_restart_mid_stream_gives_the_uninterrupted_state(
    kafka_bootstrap: str, clickhouse_url: str, start_worker: Any, tmp_path: Path
) -> None:
    events, valid = _input()
    outcomes = []
    for name, kill in (("uninterrupted", False), ("restarted", True)):
        settings = settings_for_test(
            kafka_bootstrap, clickhouse_url, tmp_path / name, **SMALL_BATCHES
        )
        prepare(settings)
        outcomes.append(_pipeline(settings, events, valid, start_worker, kill))
    a, b = outcomes
    one, two = a.run, b.run

    differ = _differences(one, two)
    clusters_one, clusters_two = set(one.clusters.values()), set(two.clusters.values())
    identical = 1 - len(differ) / valid
    print(
        f"\n{CUSTOMERS} customers, {valid} valid events; killed at {b.killed_at} stored "
        f"({b.killed_at / valid:.0%}); settled in {one.seconds:.1f}s vs {two.seconds:.1f}s; "
        f"rows {a.rows} vs {b.rows} ({a.rows_final} vs {b.rows_final} after FINAL); "
        f"clusters {len(clusters_one)} vs {len(clusters_two)} "
        f"({len(clusters_one ^ clusters_two)} not in both); "
        f"{len(differ)} events in a different cluster ({identical:.4%} identical); "
        f"refusals {dict(one.refusals)} vs {dict(two.refusals)}; live transitions under an "
        f"overridden id {a.stale} vs {b.stale}"
    )
    assert 0 < b.killed_at < valid, "the worker was not killed mid-stream"
    # every valid event stored exactly once
    assert a.rows_final == b.rows_final == valid
    assert len(one.clusters) == len(two.clusters) == valid

    unexplained = _unexplained(one, two, differ, ("uninterrupted", "restarted"))
    assert not unexplained, f"differences without a guardrail refusal: {sorted(unexplained)[:20]}"
    assert identical >= MIN_IDENTICAL_RESTART

    # stage transitions per (cluster, to_stage), on the clusters both runs agree on
    agreed = clusters_one & clusters_two
    stages_one = {k: n for k, n in one.transitions.items() if k[0] in agreed}
    stages_two = {k: n for k, n in two.transitions.items() if k[0] in agreed}
    print(
        f"stage transitions under current customers: {sum(stages_one.values())} vs "
        f"{sum(stages_two.values())} (agreed clusters), {sum(one.transitions.values())} vs "
        f"{sum(two.transitions.values())} (all); under other ids: "
        f"{sum(one.stale.values())} vs {sum(two.stale.values())}"
    )
    assert stages_one, "the journey tables are empty"
    mismatched = sorted(
        _transition_label(k) for k in stages_one.keys() | stages_two.keys()
        if stages_one.get(k) != stages_two.get(k)
    )  # fmt: skip
    assert not mismatched, f"{len(mismatched)} (cluster, stage) counts differ: {mismatched[:20]}"
    print(f"live transitions under an overridden id: {a.stale} vs {b.stale}")
    assert not a.stale, "live stage transitions under an id mapped elsewhere (uninterrupted)"
    assert len(b.stale) <= MAX_STALE_AFTER_RESTART, f"after restart: {b.stale}"
