"""Load helpers for the fault suite: a producer on a schedule of rates, the end-to-end
backlog, worker memory, and a background sampler.

Lag is measured end to end (:class:`Backlog`): messages the broker acknowledged that are
not in ClickHouse yet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from clickhouse_connect.driver.client import Client
from kafka.producer.future import RecordMetadata

from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.sim_models import SimEvent
from pipeline.settings import Settings
from pipeline.testing.faults import SteadyProducer, dead_lettered, stored_ids


class ScheduledProducer(SteadyProducer):
    """Produces ``events[i]`` at ``due[i]`` seconds after the start (non-decreasing), in
    chunks, recording each (partition, offset); :attr:`highs` holds, live, one past the
    highest acknowledged offset of each partition (the end offsets, for lag)."""

    def __init__(
        self, settings: Settings, events: Sequence[SimEvent], due: Sequence[float], chunk: int = 50
    ) -> None:
        if len(due) != len(events):
            raise ValueError(f"due has {len(due)} times for {len(events)} events")
        super().__init__(settings, events, due[-1] if due else 0.0, chunk)
        self.due = due
        self.highs: dict[int, int] = {}
        self._acked_ids: set[str] = set()
        self._acked_malformed = 0
        self.started_at = 0.0
        self.finished_at = 0.0

    def _acked(self, event: SimEvent, md: RecordMetadata) -> None:
        if md.offset + 1 > self.highs.get(md.partition, 0):
            self.highs[md.partition] = md.offset + 1
        if event.malformed is not None:
            self._acked_malformed += 1
        elif event.event_id is not None:
            self._acked_ids.add(event.event_id)

    def acked_counts(self) -> tuple[int, int]:
        """(distinct valid event ids, malformed messages) acknowledged so far."""
        return len(self._acked_ids), self._acked_malformed

    def _produce(self) -> None:
        producer = make_producer(KafkaConfig.from_settings(self.settings), client_id="fault-load")
        futures = []
        self.started_at = time.monotonic()
        for i in range(0, len(self.events), self.chunk):
            time.sleep(max(0.0, self.started_at + self.due[i] - time.monotonic()))
            for event in self.events[i : i + self.chunk]:
                future = producer.send(self.settings.raw_topic, key=event.key, value=event.payload)
                futures.append(future.add_callback(self._acked, event))
        producer.flush(120)
        self.finished_at = time.monotonic()
        for i, future in enumerate(futures):
            md = future.get(timeout=60)
            self.metadata[i] = (md.partition, md.offset)
        producer.raise_delivery_errors()
        producer.close()


def phases(rates: Sequence[tuple[float, float]]) -> list[float]:
    """Send times for phases of (messages per second, seconds): one time per message."""
    due: list[float] = []
    start = 0.0
    for rate, seconds in rates:
        count = round(rate * seconds)
        due += [start + seconds * i / count for i in range(count)]
        start += seconds
    return due


class Backlog:
    """Messages the broker acknowledged that are not in ClickHouse yet (valid ids not in
    ``touchpoints``, malformed messages not in ``dead_letters``): the end-to-end lag. (The
    raw consumer's committed offsets cannot be read back from Tansu 0.6: OffsetFetch
    answers -1 and ListGroups nothing, so group lag is not measurable there.)"""

    def __init__(self, client: Client, producer: ScheduledProducer) -> None:
        self.client, self.producer = client, producer

    def __call__(self) -> int:
        valid, malformed = self.producer.acked_counts()
        return max(0, valid - stored_ids(self.client)) + max(
            0, malformed - dead_lettered(self.client)
        )


def rss_kib(pid: int) -> int:
    """VmRSS of a live process in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


class Sampler(threading.Thread):
    """Calls ``sample()`` every ``interval`` seconds until :meth:`stop`; counts failures
    (a sample is best effort: a broker round trip may time out under load)."""

    def __init__(self, sample: Callable[[], None], interval: float = 1.0) -> None:
        super().__init__(name="fault-sampler", daemon=True)
        self.sample, self.interval = sample, interval
        self.failures: list[str] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.sample()
            except Exception as exc:  # recorded, reported by the fault as a figure
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._stopped.wait(self.interval)

    def stop(self) -> None:
        self._stopped.set()
        self.join(30)
