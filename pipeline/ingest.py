"""Validate and dedup one batch of raw messages: the pure core of the ingest agent.

A stage that raises on a valid event never crashes the worker and never skips the event:
the event is dead-lettered with the stage's name (faust would ack and lose it).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline import failpoints
from pipeline.dedup import RecentIds, dedup
from pipeline.errors import StageFailure, truncate
from pipeline.redact import redact_dead_letter
from pipeline.validate import STAGE, ValidationConfig, dead_letter, validate_message
from schemas.records import DeadLetter, FieldError, SourceRef, Touchpoint, trusted


@dataclass(frozen=True)
class RawMessage:
    """One consumed Kafka message, detached from the client library."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class IngestResult:
    valid: dict[int, list[Touchpoint]]
    """Unique valid touchpoints by source partition, in offset order."""
    dead: list[DeadLetter]
    duplicates: int
    unknown_types: Counter[str] = field(default_factory=Counter)


def _safe_validate(
    msg: RawMessage, now: datetime, cfg: ValidationConfig
) -> Touchpoint | DeadLetter:
    stamp = datetime.fromtimestamp(msg.timestamp_ms / 1000, UTC) if msg.timestamp_ms else None
    coordinates = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
    src = trusted(SourceRef, {**coordinates, "timestamp": stamp})  # Kafka's own values
    raw = msg.value if msg.value is not None else b""
    event_id = ""
    try:
        out = validate_message(raw, src, now, cfg)
        if isinstance(out, Touchpoint):
            event_id = out.event_id
            failpoints.hit("ingest.event", event_id)  # the fault suite's stage bug
        return out
    except Exception as exc:  # a bug in the stage: keep the event, say where it failed
        failure = StageFailure(STAGE, event_id, exc)
        error = FieldError(path="$", message=str(failure), value=truncate(raw[:80]))
        return dead_letter("stage_error", [error], raw, src, now, event_id=event_id)


def ingest_batch(
    messages: Sequence[RawMessage], now: datetime, cfg: ValidationConfig, window: RecentIds
) -> IngestResult:
    """Validate every message, then drop repeated event_ids."""
    valid: list[Touchpoint] = []
    dead: list[DeadLetter] = []
    for msg in messages:
        out = _safe_validate(msg, now, cfg)
        if isinstance(out, Touchpoint):
            valid.append(out)
        else:
            dead.append(redact_dead_letter(out, cfg))
    result = dedup(valid, window)
    by_partition: dict[int, list[Touchpoint]] = defaultdict(list)
    unknown: Counter[str] = Counter()
    for tp in result.unique:
        by_partition[tp.src.partition].append(tp)
        if not tp.known_type:
            unknown[tp.channel] += 1
    return IngestResult(dict(by_partition), dead, result.duplicates, unknown)
