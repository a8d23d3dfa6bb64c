"""The ground-truth file: written by :class:`GroundTruthWriter` while a run's events pass,
read back by :func:`load_ground_truth`, and :func:`pipeline_node` to compare it with what
the pipeline stores."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.validate import PII_TYPES, hash_identifier

if TYPE_CHECKING:
    from pipeline.producers.sim_models import SimEvent
    from pipeline.producers.simulation import Simulation

# --- the ground-truth file ------------------------------------------------------------------
TRUTH_VERSION = 1
_LINE = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE


class GroundTruthWriter:
    """Writes a run's ground truth as JSON lines while its events pass.

    A header object; one ``[event_id, customer, tag, dead_letter_reason]`` array per event
    with an event id (duplicates are not repeated); then, on close, one object per customer
    (segment, stage path, outcome, drop-off causes, identifiers), per best achievable
    identity component, per misleading identifier value, and the run's summary.
    """

    def __init__(self, path: Path | str, simulation: Simulation) -> None:
        self._sim = simulation
        self._start = simulation.config.start
        self._file = Path(path).open("wb", buffering=1 << 20)  # noqa: SIM115 (closed in close())
        cfg = simulation.config
        self._line({"kind": "header", "version": TRUTH_VERSION, "seed": cfg.seed,
                    "start": cfg.start, "adversarial": cfg.adversarial})  # fmt: skip

    def __enter__(self) -> GroundTruthWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _line(self, row: Any) -> None:
        self._file.write(orjson.dumps(row, option=_LINE))

    def _at(self, t: float | None) -> datetime | None:
        return None if t is None else self._start + timedelta(seconds=t)

    def add(self, event: SimEvent) -> None:
        if not event.duplicate and event.event_id is not None:
            self._line([event.event_id, event.truth_customer, event.tag, event.malformed])

    def close(self) -> None:
        """Write what is known only at the end (customers, identity) and close the file."""
        if self._file.closed:
            return
        self._customers()
        self._identity()
        self._line({"kind": "summary", **self._sim.summary.as_dict()})
        self._file.close()

    def _customers(self) -> None:
        ledger = self._sim.truth
        held = ledger.holdings()
        for who, truth in sorted(ledger.customers.items()):
            ids = sorted(held.get(who, ()))
            special = {
                i: ledger.flags[v] for i in ids if (v := i.partition(":")[2]) in ledger.flags
            }
            self._line({"kind": "customer", "id": who, "segment": truth.segment,
                        "arrived": self._at(truth.arrived), "outcome": truth.outcome,
                        "stages": [[stage, self._at(t)] for stage, t in truth.stages],
                        "ended_at": self._at(truth.ended_at), "causes": truth.causes,
                        "identifiers": ids, "special": special})  # fmt: skip

    def _identity(self) -> None:
        ledger = self._sim.truth
        for who, members in ledger.components():
            self._line({"kind": "component", "customer": who, "ids": members})
        for value, owners in ledger.owners.items():
            self._line({"kind": "misleading", "id": f"{ledger.types[value]}:{value}",
                        "reason": ledger.flags.get(value, "shared"), "owners": sorted(owners)})  # fmt: skip


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    id: int
    segment: str
    arrived: datetime
    stages: tuple[tuple[str, datetime], ...]
    outcome: str
    ended_at: datetime | None
    causes: tuple[str, ...]
    identifiers: tuple[str, ...]
    """``type:value`` (normalised: emails lower case, phones E.164)."""
    special: dict[str, str]
    """Identifier -> adversarial kind, for the shared, recycled and typo'd ones."""


@dataclass(frozen=True, slots=True)
class MisleadingId:
    id: str
    reason: str
    owners: frozenset[int]


@dataclass
class GroundTruth:
    """A ground-truth file, loaded."""

    header: dict[str, Any] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    """Event id -> true customer."""
    tags: dict[str, str] = field(default_factory=dict)
    malformed: dict[str, str] = field(default_factory=dict)
    """Event id -> expected dead-letter reason."""
    customers: dict[int, CustomerRecord] = field(default_factory=dict)
    components: list[tuple[int, frozenset[str]]] = field(default_factory=list)
    """The best achievable identity clusters and their customer."""
    misleading: dict[str, MisleadingId] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def _event(self, row: list[Any]) -> None:
        event_id, who, tag, reason = row
        self.events[event_id] = who
        if tag is not None:
            self.tags[event_id] = tag
        if reason is not None:
            self.malformed[event_id] = reason

    def _object(self, row: dict[str, Any]) -> None:
        kind = row.pop("kind")
        if kind == "header":
            self.header = row
        elif kind == "customer":
            self.customers[row["id"]] = _customer(row)
        elif kind == "component":
            self.components.append((row["customer"], frozenset(row["ids"])))
        elif kind == "misleading":
            self.misleading[row["id"]] = MisleadingId(
                row["id"], row["reason"], frozenset(row["owners"])
            )
        elif kind == "summary":
            self.summary = row


def pipeline_node(identifier: str, hash_key: bytes | None) -> str:
    """A truth identifier (``type:value``, clear) as the pipeline's node: emails and phones
    become their keyed hash when the pipeline hashes PII (``hash_key`` given)."""
    kind, _, value = identifier.partition(":")
    if hash_key is None or kind not in PII_TYPES:
        return identifier
    return f"{kind}:{hash_identifier(kind, value, hash_key)}"


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _customer(row: dict[str, Any]) -> CustomerRecord:
    return CustomerRecord(
        id=row["id"], segment=row["segment"], arrived=datetime.fromisoformat(row["arrived"]),
        stages=tuple((stage, datetime.fromisoformat(t)) for stage, t in row["stages"]),
        outcome=row["outcome"], ended_at=_time(row["ended_at"]), causes=tuple(row["causes"]),
        identifiers=tuple(row["identifiers"]), special=row["special"],
    )  # fmt: skip


def load_ground_truth(path: Path | str) -> GroundTruth:
    """Read a file written by :class:`GroundTruthWriter`."""
    truth = GroundTruth()
    with Path(path).open("rb") as lines:
        for line in lines:
            row = orjson.loads(line)
            if isinstance(row, list):
                truth._event(row)
            else:
                truth._object(row)
    if truth.header.get("version") != TRUTH_VERSION:
        raise ValueError(f"{path}: not a ground-truth file of version {TRUTH_VERSION}")
    return truth
