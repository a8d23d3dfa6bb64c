"""The fault suite's shared harness: services, a steady producer and one oracle for all.

Every fault of ``tests/faults`` runs against a :class:`FaultEnv` (a broker, a ClickHouse
server, a scratch directory and a way to start workers), produces simulated events with a
:class:`SteadyProducer`, injects its fault, waits with :func:`wait_drained`, and judges the
result with :func:`check_delivery`, the oracle the issue defines: after draining, the produced
valid event ids equal the ids in ``touchpoints FINAL`` (each once), and every malformed
message is in ``dead_letters`` once per raw offset, with the simulator's reason. The fault adds
its own figures (kills, peak lag, drain time...) to a :class:`FaultResult`.

The pytest short forms build the env from the session fixtures; ``python -m tests.faults``
builds a fresh one per fault (:func:`fresh_env`) and prints every result in one table.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.sim_models import SimEvent
from pipeline.settings import Settings
from pipeline.stage_model import load_stage_model
from pipeline.testing.kafka import EmbeddedTansu
from pipeline.testing.stack import (
    EmbeddedClickHouse,
    Process,
    prepare,
    settings_for_test,
    wait_for,
    worker_process,
    worker_ready,
)
from pipeline.verify_metrics import verify

Figure = float | int | str
DEAD_LETTER_KEY = "uniqExact(src_topic, src_partition, src_offset, cityHash64(original))"
"""One dead letter per raw message: its offset and content, the key of the ``dead_letters``
table (offsets alone repeat once a broker lost its data and numbers from 0 again)."""


@dataclass
class FaultResult:
    """One fault's outcome: its figures (for the table) and what the oracle found wrong."""

    fault: str
    figures: dict[str, Figure] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        figs = " ".join(f"{k}={v}" for k, v in self.figures.items())
        return f"{self.fault}: {'ok' if self.ok else 'FAILED'} {figs} {'; '.join(self.problems)}"


@dataclass
class FaultEnv:
    """Where a fault runs. ``broker`` and ``clickhouse`` are set when the env owns them (the
    long form), so faults that stop or restart a service can; ``None`` under pytest."""

    bootstrap: str
    clickhouse_url: str
    tmp: Path
    broker: EmbeddedTansu | None = None
    clickhouse: EmbeddedClickHouse | None = None
    workers: list[Process] = field(default_factory=list)

    def settings(self, **over: Any) -> Settings:
        """Unique topics, group and database for this run, created and migrated."""
        settings = settings_for_test(self.bootstrap, self.clickhouse_url, self.tmp, **over)
        prepare(settings)
        return settings

    def start_worker(
        self, settings: Settings, index: int, wait: bool = True, **over: Any
    ) -> Process:
        process = worker_process(settings, index, **over).start()
        self.workers.append(process)
        if wait:
            wait_for(lambda: worker_ready(process), 90, f"worker {index} ready")
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.alive and process.popen is not None:
                process.popen.terminate()
        for process in self.workers:
            process.stop()
        self.workers.clear()


@contextlib.contextmanager
def fresh_env(tmp: Path) -> Iterator[FaultEnv]:
    """A broker and a ClickHouse server of their own (the long form: one per fault)."""
    tmp.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedTansu().start()
    clickhouse = EmbeddedClickHouse(tmp / "clickhouse" / "data").start()
    env = FaultEnv(broker.bootstrap, clickhouse.url, tmp, broker, clickhouse)
    try:
        yield env
    finally:
        env.stop_workers()
        clickhouse.stop()
        broker.stop()


def simulator_key(event: SimEvent) -> bytes | None:
    """The simulator's key: the event's strongest identifier."""
    return event.key


class SteadyProducer(threading.Thread):
    """Produces ``events`` in order at a steady pace over ``seconds`` (kafka-python,
    idempotent), recording the (partition, offset) of each; ``error`` holds any failure.
    ``key`` gives each message's key (default: the simulator's)."""

    def __init__(
        self,
        settings: Settings,
        events: Sequence[SimEvent],
        seconds: float,
        chunk: int = 200,
        key: Callable[[SimEvent], bytes | None] = simulator_key,
    ) -> None:
        super().__init__(name="steady-producer", daemon=True)
        self.settings, self.events, self.seconds, self.chunk = settings, events, seconds, chunk
        self.key = key
        self.metadata: list[tuple[int, int] | None] = [None] * len(events)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # reported by the caller's thread
            self.error = exc

    def _produce(self) -> None:
        producer = make_producer(KafkaConfig.from_settings(self.settings), client_id="fault-run")
        futures = []
        started = time.monotonic()
        for i in range(0, len(self.events), self.chunk):
            due = started + self.seconds * i / max(1, len(self.events))
            time.sleep(max(0.0, due - time.monotonic()))
            for event in self.events[i : i + self.chunk]:
                futures.append(
                    producer.send(self.settings.raw_topic, key=self.key(event), value=event.payload)
                )
        producer.flush(120)
        for i, future in enumerate(futures):
            md = future.get(timeout=60)
            self.metadata[i] = (md.partition, md.offset)
        producer.raise_delivery_errors()
        producer.close()

    def finish(self, timeout: float) -> None:
        """Wait for the last send; raise the producer's error, if any."""
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"producer did not finish within {timeout:.0f}s")
        if self.error is not None:
            raise self.error


def clickhouse(settings: Settings) -> Client:
    return connect(ClickHouseConfig.from_settings(settings))


def _one(client: Client, sql: str) -> int:
    return int(client.query(sql).result_rows[0][0])


def stored_ids(client: Client) -> int:
    return _one(client, "SELECT uniqExact(event_id) FROM touchpoints")


def dead_lettered(client: Client) -> int:
    return _one(client, f"SELECT {DEAD_LETTER_KEY} FROM dead_letters")


def wait_drained(
    client: Client,
    events: Sequence[SimEvent],
    timeout: float,
    on_poll: Callable[[], None] | None = None,
) -> float:
    """Seconds until ClickHouse holds every valid id and every malformed message (raises
    ``AssertionError`` with what is missing after ``timeout``). ``on_poll`` runs each poll
    (faults sample lag or memory there)."""
    valid = len({e.event_id for e in events if e.malformed is None})
    malformed = sum(e.malformed is not None for e in events)
    started = time.monotonic()

    def drained() -> bool:
        if on_poll is not None:
            on_poll()
        return stored_ids(client) >= valid and dead_lettered(client) >= malformed

    wait_for(drained, timeout, f"{valid} valid ids and {malformed} dead letters", interval=1.0)
    return time.monotonic() - started


@dataclass(frozen=True)
class Delivery:
    """What the oracle measured."""

    valid_ids: int
    malformed: int
    lost: int
    unexpected: int
    duplicates_before_final: int
    duplicates_after_final: int
    dead_letter_offsets: int
    dead_letter_reason_diff: dict[str, int]

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"lost {self.lost} valid event ids")
        if self.unexpected:
            found.append(f"{self.unexpected} stored ids were never produced as valid")
        if self.duplicates_after_final:
            found.append(f"{self.duplicates_after_final} duplicate rows after FINAL")
        if self.dead_letter_reason_diff:
            found.append(f"dead letters by reason off by {self.dead_letter_reason_diff}")
        return found

    def figures(self) -> dict[str, Figure]:
        return {
            "valid ids": self.valid_ids, "malformed": self.malformed, "lost": self.lost,
            "dup rows before FINAL": self.duplicates_before_final,
            "dup rows after FINAL": self.duplicates_after_final,
            "dead-lettered": self.dead_letter_offsets,
        }  # fmt: skip


def check_delivery(client: Client, events: Sequence[SimEvent]) -> Delivery:
    """The oracle: produced valid ids == ``touchpoints FINAL`` ids, each once; malformed
    messages == dead letters, one per raw message, by reason."""
    valid = {e.event_id for e in events if e.malformed is None}
    stored = {r[0] for r in client.query("SELECT DISTINCT event_id FROM touchpoints").result_rows}
    rows, unique = client.query("SELECT count(), uniqExact(event_id) FROM touchpoints").result_rows[
        0
    ]
    q = "SELECT count(), uniqExact(event_id) FROM touchpoints FINAL"
    final_rows, final_unique = client.query(q).result_rows[0]
    expected = Counter(str(e.malformed) for e in events if e.malformed is not None)
    q = f"SELECT reason, {DEAD_LETTER_KEY} FROM dead_letters GROUP BY reason"
    got = Counter({str(r[0]): int(r[1]) for r in client.query(q).result_rows})
    diff = {k: got[k] - expected[k] for k in set(got) | set(expected) if got[k] != expected[k]}
    return Delivery(
        valid_ids=len(valid), malformed=sum(expected.values()), lost=len(valid - stored),
        unexpected=len(stored - valid), duplicates_before_final=int(rows) - int(unique),
        duplicates_after_final=int(final_rows) - int(final_unique),
        dead_letter_offsets=sum(got.values()), dead_letter_reason_diff=diff,
    )  # fmt: skip


_SIZES = (
    "SELECT (SELECT count() FROM stage_transitions), (SELECT count() FROM customers), "
    "(SELECT count() FROM stage_metrics), (SELECT count() FROM late_events)"
)


def wait_quiet(client: Client, checks: int = 4, timeout: float = 180) -> None:
    """Wait until the tables the stage metrics depend on stop changing (the pipeline is idle:
    the journey and metrics stages run after the touchpoints are stored)."""
    seen: list[Any] = []

    def still() -> bool:
        seen.append(client.query(_SIZES).result_rows[0])
        return len(seen) >= checks and len(set(seen[-checks:])) == 1

    wait_for(still, timeout, "the pipeline to go quiet", interval=2.0)


def check_metrics(client: Client, settings: Settings, events: Sequence[SimEvent]) -> list[str]:
    """The oracle's second half: once the pipeline is quiet, the final stage-metric windows
    over the events' time span equal their recomputation in SQL (``touchpoint verify
    metrics``); a problem per mismatch (the first five), or none. Metrics only become final
    once the watermark passes them."""
    wait_quiet(client)
    times = [e.occurred_at for e in events if e.malformed is None]
    if not times:
        return []
    report = verify(client, load_stage_model(settings.stage_model_path), min(times), max(times))
    return [
        f"metric window {key} {measure}: stored {mine}, recomputed {theirs}"
        for key, measure, mine, theirs in report.mismatches[:5]
    ] + ([f"... {len(report.mismatches)} mismatches in all"] if len(report.mismatches) > 5 else [])
