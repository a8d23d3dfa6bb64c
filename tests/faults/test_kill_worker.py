"""Fault injection, short form: SIGKILL workers while ~20,000 simulated events stream in.

Two workers share 4 partitions; events are produced at a steady pace for ~35 s while, every
~8 s, the oldest worker is killed with SIGKILL (no clean-up, no final commit) and a
replacement starts on a new web port. Afterwards two workers keep running until ClickHouse
holds everything. Oracle: every produced valid event_id is in ``touchpoints FINAL`` exactly
once, and every produced malformed message is in ``dead_letters`` (one per raw offset, with the
simulator's reason): nothing lost, nothing duplicated after FINAL.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import SimEvent, SimulationConfig, simulate
from pipeline.testing.kafka import free_port
from pipeline.testing.stack import prepare, settings_for_test, wait_for, worker_ready

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(280)]

PRODUCE_SECONDS = 34.0
KILL_EVERY = 8.0
KILLS = 4
DRAIN_TIMEOUT = 120.0


class SteadyProducer(threading.Thread):
    """Produces the events in order at a steady pace, recording (partition, offset) of each."""

    def __init__(self, settings: Any, events: list[SimEvent], seconds: float) -> None:
        super().__init__(name="steady-producer", daemon=True)
        self.settings, self.events, self.seconds = settings, events, seconds
        self.metadata: list[tuple[int, int] | None] = [None] * len(events)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = make_producer(
                KafkaConfig.from_settings(self.settings), client_id="fault-test"
            )
            futures = []
            chunk = 200
            started = time.monotonic()
            for i in range(0, len(self.events), chunk):
                due = started + self.seconds * i / len(self.events)
                time.sleep(max(0.0, due - time.monotonic()))
                for event in self.events[i : i + chunk]:
                    futures.append(
                        producer.send(self.settings.raw_topic, key=event.key, value=event.payload)
                    )
            producer.flush(60)
            for i, future in enumerate(futures):
                md = future.get(timeout=30)
                self.metadata[i] = (md.partition, md.offset)
            producer.raise_delivery_errors()
            producer.close()
        except BaseException as exc:  # reported by the test thread
            self.error = exc


def test_sigkilled_workers_lose_and_duplicate_nothing(
    kafka_bootstrap: str, clickhouse_url: str, tmp_path: Path, start_worker: Any
) -> None:
    settings = settings_for_test(kafka_bootstrap, clickhouse_url, tmp_path, partitions=4)
    prepare(settings)
    config = SimulationConfig(
        seed=11, start=datetime.now(UTC) - timedelta(hours=2), customers=2200, max_events=20000,
        malformed_fraction=0.01, duplicate_fraction=0.02,
    )  # fmt: skip
    events = list(simulate(config))
    valid_ids = {e.event_id for e in events if e.malformed is None}
    malformed = [e for e in events if e.malformed is not None]
    assert len(events) >= 20000 and len(malformed) >= 150 and sum(e.duplicate for e in events) > 300

    # two workers, then the steady stream, then a kill + replacement every KILL_EVERY seconds
    workers = [start_worker(settings, 0), start_worker(settings, 1, worker_web_port=free_port())]
    producer = SteadyProducer(settings, events, PRODUCE_SECONDS)
    producer.start()
    kills = 0
    t0 = time.monotonic()
    for n in range(KILLS):
        time.sleep(max(0.0, t0 + KILL_EVERY * (n + 1) - time.monotonic()))
        victim = workers.pop(0)  # the oldest one: ready and owning partitions
        assert victim.alive, f"worker died by itself: {victim.log_tail()}"
        victim.kill()
        kills += 1
        workers.append(start_worker(settings, 2 + n, wait=False, worker_web_port=free_port()))
    producer.join(PRODUCE_SECONDS + 90)
    assert not producer.is_alive(), "producer did not finish"
    if producer.error is not None:
        raise producer.error
    produced_at = time.monotonic()
    for worker in workers:
        wait_for(partial(worker_ready, worker), 90, "replacement worker ready")

    client = connect(ClickHouseConfig.from_settings(settings))

    def stored_ids() -> int:
        return int(client.query("SELECT uniqExact(event_id) FROM touchpoints").result_rows[0][0])

    def dead_lettered() -> int:
        q = "SELECT uniqExact(src_topic, src_partition, src_offset) FROM dead_letters"
        return int(client.query(q).result_rows[0][0])

    def drained() -> bool:
        return stored_ids() >= len(valid_ids) and dead_lettered() >= len(malformed)

    try:
        wait_for(drained, DRAIN_TIMEOUT, "ClickHouse to hold every event", interval=1.0)
    except AssertionError:
        have = {r[0] for r in client.query("SELECT DISTINCT event_id FROM touchpoints").result_rows}
        missing = valid_ids - have
        where: Counter[int | None] = Counter()
        examples: list[tuple[str | None, tuple[int, int] | None]] = []
        for i, e in enumerate(events):
            if e.event_id in missing and e.malformed is None:
                at = producer.metadata[i]
                where[at[0] if at else None] += 1
                if len(examples) < 20:
                    examples.append((e.event_id, producer.metadata[i]))
        print(
            f"missing {len(missing)} of {len(valid_ids)} valid ids; by raw partition: {dict(where)}"
        )
        print(f"examples (event_id, (raw partition, offset)): {examples}")
        print(f"dead letters {dead_lettered()} of {len(malformed)}")
        for worker in workers:
            print(f"--- {worker.log_path.name} ---\n{worker.log_tail(2000)}")
        raise
    drain_seconds = time.monotonic() - produced_at

    rows = client.query("SELECT count(), uniqExact(event_id) FROM touchpoints").result_rows[0]
    q = "SELECT count(), uniqExact(event_id) FROM touchpoints FINAL"
    final = client.query(q).result_rows[0]
    stored = {
        r[0] for r in client.query("SELECT DISTINCT event_id FROM touchpoints FINAL").result_rows
    }
    lost = len(valid_ids - stored)
    dead_rows = client.query("SELECT count() FROM dead_letters").result_rows[0][0]
    print(
        f"\nkill-worker: events={len(events)} valid_ids={len(valid_ids)} malformed={len(malformed)} "
        f"kills={kills} drain={drain_seconds:.1f}s lost={lost} "
        f"duplicates_before_final={rows[0] - rows[1]} duplicates_after_final={final[0] - final[1]} "
        f"dead_letter_rows={dead_rows} dead_letter_offsets={dead_lettered()}"
    )
    assert lost == 0
    assert stored == valid_ids
    assert final == (len(valid_ids), len(valid_ids))

    expected = Counter(e.malformed for e in malformed)
    q = "SELECT reason, uniqExact(src_topic, src_partition, src_offset) FROM dead_letters GROUP BY reason"
    assert Counter({r[0]: r[1] for r in client.query(q).result_rows}) == expected
    with_ids = Counter((e.event_id, e.malformed) for e in malformed if e.event_id)
    q = "SELECT event_id, reason FROM dead_letters FINAL WHERE event_id != ''"
    assert Counter((r[0], r[1]) for r in client.query(q).result_rows) == with_ids
