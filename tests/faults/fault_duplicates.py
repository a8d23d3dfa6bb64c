"""Fault 5: duplicates, 5% of events sent twice, and a producer retry storm.

The simulator re-emits 5% of its events (same bytes, seconds later). Meanwhile a second,
non-idempotent producer with a 40 ms request timeout resends a fifth of the valid events
in batches (a client that never saw its acks): every timed-out request is retried, so
the broker may append a batch more than once; the raw topic's size says how many copies
landed. A clean reference run, the same events without any copy, goes through its own
topics and database at the same time. Oracle: every id stored once (after FINAL), dead
letters exact, final metric windows equal their recomputation, and the duplicated run's
stage transitions and metric totals (stage_metrics plus late_events, per stage and measure)
equal the clean run's: each event counted once in every metric.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.sim_models import SimEvent
from pipeline.settings import Settings
from pipeline.testing.fault_inputs import Size, raw_payloads, simulated
from pipeline.testing.faults import (
    FaultEnv,
    FaultResult,
    SteadyProducer,
    check_delivery,
    check_metrics,
    clickhouse,
    wait_drained,
    wait_quiet,
)
from pipeline.testing.kafka import free_port
from tests.faults.suite import Fault, Scale

SIZES = {
    "short": Size(400, 3_000, 3, 1, 6.0, 150.0),
    "long": Size(5_000, 50_000, 6, 2, 120.0, 600.0),
}
STORM_SHARE, STORM_CHUNK = 0.2, 100
STORM_REQUEST_TIMEOUT_MS = 3
"""Shorter than a produce round trip here: most requests time out and are retried, and the
broker appends many of them more than once."""


@dataclass(eq=False)  # a thread: hashed by identity
class Storm(threading.Thread):
    """Resends ``chunks`` of valid events with retries on tiny request timeouts."""

    settings: Settings
    chunks: list[list[SimEvent]]
    seconds: float
    sent: int = 0
    gave_up: int = 0
    """Resends that timed out every retry (the main producer sent them too)."""
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(name="retry-storm", daemon=True)

    def run(self) -> None:
        try:
            producer = make_producer(
                KafkaConfig.from_settings(self.settings), client_id="retry-storm",
                idempotence=False, request_timeout_ms=STORM_REQUEST_TIMEOUT_MS, retry_backoff_ms=5,
                linger_ms=0, delivery_timeout_ms=30_000,
            )  # fmt: skip
            started = time.monotonic()
            for n, chunk in enumerate(self.chunks):
                due = started + self.seconds * n / max(1, len(self.chunks))
                time.sleep(max(0.0, due - time.monotonic()))
                for e in chunk:
                    producer.send(self.settings.raw_topic, key=e.key, value=e.payload)
                self.sent += len(chunk)
            producer.flush(60, raise_errors=False)
            self.gave_up = producer.delivery_stats().failed
            producer.close(60, null_logger=True)
        except BaseException as exc:  # reported by the caller's thread
            self.error = exc


def storm_chunks(events: Sequence[SimEvent], seed: int) -> list[list[SimEvent]]:
    valid = [e for e in events if e.malformed is None]
    chunks = [valid[i : i + STORM_CHUNK] for i in range(0, len(valid), STORM_CHUNK)]
    rng = random.Random(seed)
    return sorted(
        rng.sample(chunks, int(len(chunks) * STORM_SHARE)), key=lambda c: events.index(c[0])
    )


def first_copies(events: Sequence[SimEvent]) -> list[SimEvent]:
    """The clean run: each valid id once (its first copy), malformed messages as they are."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e.malformed is None and e.event_id in seen:
            continue
        seen.add(e.event_id or "")
        out.append(e)
    return out


_TOTALS = """
SELECT stage, measure, sum(n) FROM (
    SELECT stage, 'entries' AS measure, toInt64(entries) AS n FROM stage_metrics FINAL
        WHERE is_final = 1 AND channel != 'all' AND segment != 'all'
    UNION ALL SELECT stage, 'conversions', toInt64(conversions) FROM stage_metrics FINAL
        WHERE is_final = 1 AND channel != 'all' AND segment != 'all'
    UNION ALL SELECT stage, 'dropoffs', toInt64(dropoffs) FROM stage_metrics FINAL
        WHERE is_final = 1 AND channel != 'all' AND segment != 'all'
    UNION ALL SELECT stage, measure, toInt64(delta) FROM late_events
    UNION ALL SELECT to_stage, 'transitions', 1 FROM stage_transitions FINAL WHERE is_deleted = 0
    UNION ALL SELECT '*', 'touchpoints', 1 FROM touchpoints FINAL
) GROUP BY stage, measure ORDER BY stage, measure
"""


def totals(client: Client) -> dict[str, int]:
    """Per stage and measure: final metric windows plus late changes, transitions, rows."""
    return {f"{s}/{m}": int(n) for s, m, n in client.query(_TOTALS).result_rows}


def run(env: FaultEnv, scale: Scale) -> FaultResult:
    size = SIZES[scale]
    events = simulated(5, size.customers, size.events, duplicate_fraction=0.05)
    clean = first_copies(events)
    chunks = storm_chunks(events, seed=5)
    dup_settings = env.settings(partitions=size.partitions)
    ref_settings = env.settings(partitions=size.partitions)
    for i in range(size.workers):
        env.start_worker(dup_settings, i, worker_web_port=free_port())
        env.start_worker(ref_settings, 100 + i, worker_web_port=free_port())
    producers = [
        SteadyProducer(dup_settings, events, size.produce_seconds),
        SteadyProducer(ref_settings, clean, size.produce_seconds),
    ]
    storm = Storm(dup_settings, chunks, size.produce_seconds)
    for thread in (*producers, storm):
        thread.start()
    for p in producers:
        p.finish(size.produce_seconds + 180)
    storm.join(size.produce_seconds + 180)
    if storm.error is not None:
        raise storm.error
    dup, ref = clickhouse(dup_settings), clickhouse(ref_settings)
    drain = wait_drained(dup, events, size.drain_timeout)
    wait_drained(ref, clean, size.drain_timeout)
    delivery = check_delivery(dup, events)
    problems = delivery.problems() + check_metrics(dup, dup_settings, events)
    wait_quiet(ref)
    mine, theirs = totals(dup), totals(ref)
    differ = {k: (mine.get(k), theirs.get(k)) for k in mine.keys() | theirs.keys()}
    differ = {k: v for k, v in differ.items() if v[0] != v[1]}
    if differ:
        problems.append(
            f"totals (duplicated run, clean run) differ: {dict(sorted(differ.items()))}"
        )
    on_topic = raw_payloads(dup_settings)
    sent = Counter(e.payload for e in events)
    unwritten = sum((sent - on_topic).values())
    if unwritten:
        problems.append(f"{unwritten} acknowledged messages are not in the raw topic")
    extra = sum(on_topic.values()) - len(events) - storm.sent
    figures = {
        "events": len(events), "simulator copies": sum(e.duplicate for e in events),
        "storm resent": storm.sent, "storm gave up": storm.gave_up, "retry copies": extra,
        "raw messages": sum(on_topic.values()), **delivery.figures(),
        "transitions": sum(n for k, n in mine.items() if k.endswith("/transitions")),
        "metric totals == clean run": "yes" if not differ else f"no ({len(differ)} differ)",
        "drain after last produce (s)": round(drain, 1),
    }  # fmt: skip
    return FaultResult("duplicates", figures, problems)


FAULT = Fault(5, "duplicates", "5% sent twice plus a producer retry storm; vs a clean run", run)
