"""Run a simulation into Kafka: pacing, progress and the end-of-run summary.

Two ways to pace: ``rate`` sends at most that many messages per second (0: as fast as the
producer goes); ``live`` sends each message when the wall clock reaches its simulated
delivery time, so event times look like a live feed. A live run starts its simulated clock
a warm-up before now and sends only what is due from now on, so the feed starts at its
steady rate with journeys already in progress.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.producers.kafka import STALL_SECONDS, TrackedProducer
from pipeline.producers.simulator import SimEvent

CHECK_EVERY = 1.0
"""Seconds between checks of the producer's delivery errors during a run."""


@dataclass
class SimulationRun:
    sent: int = 0
    malformed: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    warmup: int = 0
    """Live runs start mid-day: messages of the warm-up window are generated, not sent."""
    seconds: float = 0.0

    def render(self, console: Console) -> None:
        rate = self.sent / self.seconds if self.seconds else 0.0
        console.print(f"sent {self.sent:,} messages in {self.seconds:.1f}s ({rate:,.0f}/s)")
        console.print(
            f"  duplicates: {self.duplicates:,}; malformed: {sum(self.malformed.values()):,} {dict(self.malformed)}"
        )
        if self.warmup:
            console.print(f"  warm-up messages generated but not sent: {self.warmup:,}")


class Pacer:
    """Sleeps so that sends follow a rate, or, live, the simulated delivery clock."""

    def __init__(self, rate: float, live: bool) -> None:
        self.rate, self.live = rate, live
        self.started = time.monotonic()
        self.started_wall = time.time()

    def skip(self, event: SimEvent) -> bool:
        """Live: a message due before the run started belongs to the warm-up; not sent."""
        return self.live and event.delivered_at.timestamp() < self.started_wall

    def wait(self, index: int, event: SimEvent) -> None:
        if self.live:
            due = self.started + (event.delivered_at.timestamp() - self.started_wall)
        elif self.rate > 0:
            due = self.started + index / self.rate
        else:
            return
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def run(
    events: Iterable[SimEvent],
    producer: TrackedProducer,
    topic: str,
    *,
    rate: float,
    live: bool,
    total: int | None,
    quiet: bool,
    console: Console,
) -> SimulationRun:
    """Produce every simulated message to ``topic``; returns what was sent."""
    result = SimulationRun()
    pacer = Pacer(rate, live)
    started = time.monotonic()
    columns = (TextColumn("simulate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=quiet) as progress:
        task = progress.add_task("simulate", total=total)
        next_check = started + CHECK_EVERY
        for index, event in enumerate(events):
            if time.monotonic() >= next_check:  # a failure or lost data stops the run now
                producer.raise_delivery_errors()
                producer.raise_if_stalled(STALL_SECONDS)
                next_check = time.monotonic() + CHECK_EVERY
            if pacer.skip(event):
                result.warmup += 1
                continue
            pacer.wait(index, event)
            producer.send(topic, key=event.key, value=event.payload)
            result.sent += 1
            result.duplicates += event.duplicate
            if event.malformed_kind is not None:
                result.malformed[event.malformed_kind] += 1
            if index % 1000 == 0:
                progress.update(task, completed=result.sent)
        producer.flush()
        progress.update(task, completed=result.sent)
    result.seconds = time.monotonic() - started
    return result
