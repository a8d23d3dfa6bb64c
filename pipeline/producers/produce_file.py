"""Produce a JSONL file of events to the raw topic, validating every line first.

Valid lines are sent as they are, keyed by their strongest identifier. Invalid lines are
reported (line number, field, message, value) and, with ``send_invalid``, sent too so that
the pipeline dead-letters them. ``python -m pipeline.producers.produce_file --help``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from pipeline.producers.client import (
    DEFAULT_TOPIC,
    check_event,
    local_validation_config,
    raw_message_key,
)
from pipeline.producers.kafka import TrackedProducer
from pipeline.validate import ValidationConfig
from schemas.records import DeadLetter

DEFAULT_MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class LineError:
    """One problem of one invalid line (an invalid line may have several)."""

    line: int
    event_id: str
    reason: str
    path: str
    message: str
    value: str


@dataclass
class ProduceReport:
    """What happened to a file: counts, reasons, and the first errors."""

    path: str
    lines: int = 0
    """Non-blank lines read."""
    blank: int = 0
    valid: int = 0
    invalid: int = 0
    sent_valid: int = 0
    sent_invalid: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    errors: list[LineError] = field(default_factory=list)
    """The first ``max_errors`` invalid lines' problems (one entry per field)."""
    errors_truncated: bool = False
    elapsed: float = 0.0

    @property
    def sent(self) -> int:
        return self.sent_valid + self.sent_invalid

    @property
    def ok(self) -> bool:
        return self.invalid == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "lines": self.lines,
            "blank": self.blank,
            "valid": self.valid,
            "invalid": self.invalid,
            "sent": self.sent,
            "sent_invalid": self.sent_invalid,
            "reasons": dict(self.reasons),
            "errors": [dataclasses.asdict(e) for e in self.errors],
            "errors_truncated": self.errors_truncated,
            "elapsed_seconds": round(self.elapsed, 3),
        }

    def render(self, console: Console) -> None:
        """Print the report: a summary line, the reasons, the first errors."""
        rate = self.lines / self.elapsed if self.elapsed > 0 else 0.0
        style = "green" if self.ok else "yellow"
        console.print(
            f"[{style}]{self.path}: {self.lines} events, {self.valid} valid, "
            f"{self.invalid} invalid; {self.sent} sent"
            + (f" ({self.sent_invalid} invalid, to be dead-lettered)" if self.sent_invalid else "")
            + f" in {self.elapsed:.2f}s ({rate:,.0f}/s)[/{style}]"
        )
        if self.blank:
            console.print(f"{self.blank} blank line(s) skipped")
        if self.reasons:
            console.print(
                "reasons: " + ", ".join(f"{r}={n}" for r, n in self.reasons.most_common())
            )
        if self.errors:
            table = Table(title="first errors", show_lines=False)
            for column in ("line", "event_id", "reason", "field", "problem", "value"):
                table.add_column(column, overflow="fold")
            for e in self.errors:
                table.add_row(str(e.line), e.event_id, e.reason, e.path, e.message, e.value)
            console.print(table)
            if self.errors_truncated:
                console.print(f"(only the first {len(self.errors)} errors are listed)")


def produce_file(
    path: str | Path,
    producer: TrackedProducer | None,
    topic: str = DEFAULT_TOPIC,
    *,
    progress: bool = False,
    send_invalid: bool = False,
    dry_run: bool = False,
    validation: ValidationConfig | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
    console: Console | None = None,
) -> ProduceReport:
    """Validate each line of a JSONL file (``-``: stdin) and produce the valid ones.

    ``producer`` (``None`` only with ``dry_run``) is flushed at the end, so delivery
    failures raise :class:`~pipeline.producers.kafka.DeliveryFailed` here. The report's
    ``errors`` lists the first ``max_errors`` problems (an invalid line may have several).
    """
    cfg = validation or local_validation_config()
    report = ProduceReport(path=str(path))
    console = console or Console(stderr=True)
    if producer is None and not dry_run:
        raise ValueError("a producer is required unless dry_run is set")
    started = time.monotonic()
    stdin = str(path) == "-"
    total = None if stdin else Path(path).stat().st_size
    opened: Any = nullcontext(sys.stdin.buffer) if stdin else open(path, "rb")  # noqa: SIM115
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[counts]}"),
        console=console,
        disable=not progress,
        transient=False,
    )
    with opened as stream, bar:
        task: TaskID = bar.add_task(Path(str(path)).name, total=total, counts="")
        now = datetime.now(UTC)
        for number, line in enumerate(stream, start=1):
            bar.advance(task, len(line))
            raw = line.rstrip(b"\r\n")
            if not raw.strip():
                report.blank += 1
                continue
            report.lines += 1
            if report.lines % 1000 == 0:
                now = datetime.now(UTC)
                bar.update(task, counts=f"{report.valid} valid, {report.invalid} invalid")
            result = check_event(raw, cfg, now=now)
            if isinstance(result, DeadLetter):
                report.invalid += 1
                report.reasons[result.reason] += 1
                for error in result.errors:
                    if len(report.errors) >= max_errors:
                        report.errors_truncated = True
                        break
                    report.errors.append(
                        LineError(
                            number,
                            result.event_id,
                            result.reason,
                            error.path,
                            error.message,
                            error.value,
                        )
                    )
                if send_invalid and producer is not None and not dry_run:
                    producer.send(topic, value=raw, key=raw_message_key(raw))
                    report.sent_invalid += 1
                continue
            report.valid += 1
            if producer is not None and not dry_run:
                producer.send(topic, value=raw, key=raw_message_key(raw, result))
                report.sent_valid += 1
        bar.update(task, counts=f"{report.valid} valid, {report.invalid} invalid")
        if producer is not None and not dry_run:
            bar.update(task, description="flushing")
            producer.flush()
    report.elapsed = time.monotonic() - started
    return report
