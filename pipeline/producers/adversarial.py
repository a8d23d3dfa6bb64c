"""What the simulator does to make the pipeline's life hard, and the truth to judge it by.

* Malformed messages, one :data:`MalformedKind` each, with the dead-letter reason the
  validate stage gives it (:data:`MALFORMED_REASONS`).
* Adversarial identities (:class:`Adversary`, off unless asked for): household and company
  switchboard phones shared by many people, shared devices, forwarded emails clicked by
  someone else, recycled phone numbers, placeholder ids, typo'd emails, late link events.
* :class:`TruthLedger`: who truly owns which identifier, the stage path of every customer,
  and the best achievable identity components (identifiers linked by valid events of their
  one true owner; values with several owners are misleading and left out), written by
  :class:`GroundTruthWriter` and read back by :func:`load_ground_truth`.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from pipeline.validate import PII_TYPES, hash_identifier
from schemas.events import MAX_SCHEMA_VERSION
from schemas.records import DeadLetterReason

if TYPE_CHECKING:
    from pipeline.producers.personas import Customer, IdFactory
    from pipeline.producers.simulator import SimEvent, Simulation

# --- event tags (kept per event in the ground truth) -------------------------------------------
LINK = "link"
"""An event that first ties two of a customer's identifiers together."""
LATE_LINK = "late_link"
HOUSEHOLD = "household_phone"
SWITCHBOARD = "switchboard"
SHARED_DEVICE = "shared_device"
FORWARDED = "forwarded_email"
RECYCLED = "recycled_phone"
PLACEHOLDER = "placeholder_id"
TYPO = "typo_email"
ADVERSARIAL_TAGS = (HOUSEHOLD, SWITCHBOARD, SHARED_DEVICE, FORWARDED, RECYCLED, PLACEHOLDER, TYPO)
PLACEHOLDER_VALUES = ("null", "undefined", "N/A", "[object Object]", "None", "0", "-1", "anonymous")
"""Placeholder identifier values, all among :data:`pipeline.settings.DEFAULT_PLACEHOLDERS`."""
_TYPO_DOMAINS = {
    "gmail.com": "gmial.com", "yahoo.com": "yaho.com", "outlook.com": "outlok.com",
    "hotmail.com": "hotmial.com", "icloud.com": "iclod.com", "proton.me": "protn.me",
}  # fmt: skip

# --- malformed messages ----------------------------------------------------------------------
MalformedKind = Literal[
    "not_json", "invalid_utf8", "oversized", "missing_field", "wrong_type", "placeholder_only",
    "naive_timestamp", "unknown_channel", "not_object", "future_timestamp", "schema_too_new",
]  # fmt: skip
MALFORMED_REASONS: dict[MalformedKind, DeadLetterReason] = {
    "not_json": "not_json",
    "invalid_utf8": "invalid_utf8",
    "oversized": "too_large",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "placeholder_only": "placeholder_identifier",
    "naive_timestamp": "invalid_value",
    "unknown_channel": "invalid_value",
    "not_object": "not_object",
    "future_timestamp": "future_timestamp",
    "schema_too_new": "unsupported_schema_version",
}
"""Each kind and the :data:`~schemas.records.DeadLetterReason` ``validate_message`` gives it."""
MALFORMED_WEIGHTS: dict[MalformedKind, float] = {
    "not_json": 3, "invalid_utf8": 2, "oversized": 0.3, "missing_field": 3, "wrong_type": 3,
    "placeholder_only": 3, "naive_timestamp": 2, "unknown_channel": 2, "not_object": 1,
    "future_timestamp": 1, "schema_too_new": 1,
}  # fmt: skip
OVERSIZED_BYTES = 1_000_000 + 4096
"""Payload size of an ``oversized`` message: above the contract's 1 MB limit."""


def _cut(raw: bytes, rng: random.Random) -> bytes:
    return raw[: -rng.randint(1, min(40, len(raw) - 1))]


def _bad_byte(raw: bytes, rng: random.Random) -> bytes:
    cut = rng.randint(1, len(raw) - 1)
    return raw[:cut] + b"\xc3\x28" + raw[cut:]


def _drop_field(bad: dict[str, Any], rng: random.Random) -> None:
    del bad[rng.choice(("occurred_at", "event_type", "identifiers", "channel"))]


def _wrong_type(bad: dict[str, Any], rng: random.Random) -> None:
    key, value = rng.choice((("event_type", 42), ("properties", "n/a"), ("schema_version", "v1")))
    bad[key] = value


_FIELD_CHANGES: dict[str, Callable[[dict[str, Any], random.Random], Any]] = {
    "oversized": lambda b, _: b.update(
        properties={**b["properties"], "blob": "x" * OVERSIZED_BYTES}
    ),
    "missing_field": _drop_field,
    "wrong_type": _wrong_type,
    "placeholder_only": lambda b, r: b.update(
        identifiers={k: r.choice(PLACEHOLDER_VALUES) for k in b["identifiers"]}
    ),
    "naive_timestamp": lambda b, _: b.update(occurred_at=b["occurred_at"].replace(tzinfo=None)),
    "unknown_channel": lambda b, r: b.update(channel=r.choice(("sms", "push", "whatsapp", "Web"))),
    "future_timestamp": lambda b, _: b.update(occurred_at=b["occurred_at"] + timedelta(days=3650)),
    "schema_too_new": lambda b, _: b.update(schema_version=MAX_SCHEMA_VERSION + 1),
}
_BYTE_CHANGES: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "not_json": _cut,
    "invalid_utf8": _bad_byte,
    "not_object": lambda raw, _: b"[" + raw + b"]",
}


def corrupt(kind: MalformedKind, body: dict[str, Any], rng: random.Random) -> bytes:
    """The bytes of a broken copy of ``body`` (``occurred_at`` holds an aware datetime)."""
    bad = dict(body)
    if kind in _FIELD_CHANGES:
        _FIELD_CHANGES[kind](bad, rng)
    raw = orjson.dumps(bad, option=orjson.OPT_UTC_Z)
    return _BYTE_CHANGES[kind](raw, rng) if kind in _BYTE_CHANGES else raw


# --- adversarial identities --------------------------------------------------------------------
class AdversarialMix(BaseModel):
    """How often each adversarial identity case happens when adversarial mode is on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    household_phone: float = Field(
        0.12, ge=0, le=1, description="Customers in a household sharing a landline."
    )
    switchboard: float = Field(
        0.5, ge=0, le=1, description="Professionals calling from a company switchboard."
    )
    switchboards: int = Field(3, ge=1, description="Number of company switchboard phones.")
    shared_device: float = Field(
        0.06, ge=0, le=1, description="Customers sharing a device (cookie) with another."
    )
    forwarded_email: float = Field(
        0.15, ge=0, le=1, description="Marketing clicks made by the person it was forwarded to."
    )
    recycled_phone: float = Field(
        0.05, ge=0, le=1, description="New customers given a retired customer's number."
    )
    placeholder_id: float = Field(
        0.03, ge=0, le=1, description="Events carrying an extra placeholder identifier."
    )
    typo_email: float = Field(
        0.06, ge=0, le=1, description="Customers who also subscribed with a typo'd email."
    )
    late_link: float = Field(
        0.3, ge=0, le=1, description="Link events delivered minutes after what they link."
    )


def typo_of(email: str) -> str:
    """A misspelt domain no real address here uses, so a typo never hits someone else."""
    local, _, domain = email.partition("@")
    return f"{local}@{_TYPO_DOMAINS.get(domain, 'x' + domain)}"


class Adversary:
    """Hands out shared and misleading identifiers; does nothing without a mix."""

    def __init__(self, mix: AdversarialMix | None, rng: random.Random, ids: IdFactory) -> None:
        self.mix = mix
        self._rng = rng
        self._ids = ids
        self._home_phone: str | None = None
        self._home_places = 0
        """The landline of the household being filled, and how many more people join it."""
        self._device: str | None = None
        self._boards: list[str] = []
        self._retired: deque[str] = deque(maxlen=1000)
        self._recent: deque[Customer] = deque(maxlen=64)

    def equip(self, c: Customer) -> None:
        """Decide, at arrival, which shared or misleading identifiers ``c`` holds."""
        m, rng = self.mix, self._rng
        if m is None:
            return
        if rng.random() < m.household_phone:
            self._join_household(c)
        elif c.segment.name == "professional" and rng.random() < m.switchboard:
            if len(self._boards) < m.switchboards:
                self._boards.append(self._ids.phone())
            c.shared_phone = rng.choice(self._boards)
            c.special[c.shared_phone] = SWITCHBOARD
        if rng.random() < m.shared_device:
            self._share_device(c)
        if self._retired and rng.random() < m.recycled_phone:
            c.phones[0] = self._retired.popleft()
            c.special[c.phones[0]] = RECYCLED
        if rng.random() < m.typo_email:
            c.typo_email = typo_of(c.emails[0])
            c.special[c.typo_email] = TYPO
        self._recent.append(c)

    def _join_household(self, c: Customer) -> None:
        if self._home_phone is None or self._home_places <= 0:
            self._home_phone, self._home_places = self._ids.phone(), self._rng.randint(1, 3)
        else:
            self._home_places -= 1
        c.shared_phone = self._home_phone
        c.special[c.shared_phone] = HOUSEHOLD

    def _share_device(self, c: Customer) -> None:
        if self._device is None:
            self._device = c.shared_cookie = self._ids.anonymous_id()
        else:
            c.shared_cookie, self._device = self._device, None
        c.special[c.shared_cookie] = SHARED_DEVICE

    def retire(self, c: Customer) -> None:
        """``c``'s journey ended: its personal number may be given to someone new."""
        if self.mix is not None and c.phones[0] not in c.special:
            self._retired.append(c.phones[0])

    def forward_to(self, c: Customer) -> Customer | None:
        """Someone ``c`` forwards a marketing email to, who then clicks it (or ``None``)."""
        if self.mix is None or self._rng.random() >= self.mix.forwarded_email:
            return None
        friend = self._rng.choice(self._recent)
        return friend if friend is not c else None

    def decorate(self, ids: dict[str, str]) -> dict[str, str] | None:
        """A copy of ``ids`` with an extra placeholder identifier, sometimes."""
        if self.mix is None or self._rng.random() >= self.mix.placeholder_id:
            return None
        missing = [k for k in ("email", "phone", "user_id", "anonymous_id") if k not in ids]
        if not missing:
            return None
        return {**ids, self._rng.choice(missing): self._rng.choice(PLACEHOLDER_VALUES)}


# --- ground truth ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CustomerTruth:
    segment: str
    arrived: float
    stages: tuple[tuple[str, float], ...] = ()
    """(stage, seconds since the start it was entered)."""
    outcome: str = "censored"
    """``completed`` (reached advocacy), ``dropped``, or ``censored`` (cut by the run's end)."""
    ended_at: float | None = None
    causes: tuple[str, ...] = ()
    """Drop-off causes present at the stage where the customer dropped."""


_Record = tuple[str, float, tuple[tuple[str, float], ...], str, float | None, tuple[str, ...]]
"""A :class:`CustomerTruth` as a plain tuple of atoms: the garbage collector stops tracking
those, so a ledger of many customers does not slow every collection down."""


class _Customers(Mapping[int, CustomerTruth]):
    def __init__(self, records: dict[int, _Record]) -> None:
        self._records = records

    def __getitem__(self, who: int) -> CustomerTruth:
        return CustomerTruth(*self._records[who])

    def __iter__(self) -> Iterator[int]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


class TruthLedger:
    """Identifier ownership, stage paths and identity links, as the simulation happens."""

    def __init__(self, track: bool = True) -> None:
        self.track = track
        """Off: nothing is recorded (a long demo run needs no truth and no memory for it)."""
        self._records: dict[int, _Record] = {}
        self.customers: Mapping[int, CustomerTruth] = _Customers(self._records)
        """Each customer's truth (a read-only view)."""
        self.types: dict[str, str] = {}
        self.flags: dict[str, str] = {}
        self.owners: dict[str, set[int]] = {}
        """Misleading values: those with more than one true owner."""
        self._owner: dict[str, int] = {}
        self._alias: dict[str, str] = {}
        self._seen: dict[str, None] = {}
        self._edges: dict[tuple[str, str], None] = {}
        """Dicts of atoms, not sets: the garbage collector can stop tracking them."""

    def start(self, who: int, segment: str, t: float) -> None:
        if self.track:
            self._records[who] = (segment, t, (), "censored", None, ())

    def own(self, id_type: str, value: str, who: int, kind: str | None = None) -> None:
        if not self.track:
            return
        prev = self._owner.setdefault(value, who)
        self.types[value] = id_type
        if kind is not None:
            self.flags[value] = kind
        if prev != who:
            self.owners.setdefault(value, {prev}).add(who)

    def alias(self, shown: str, value: str) -> None:
        """``shown`` is how ``value`` appears in a payload (another format or case)."""
        if self.track:
            self._alias[shown] = value

    def observe(self, who: int, ids: dict[str, str]) -> None:
        """A valid event of ``who`` carried ``ids``: their own values are linked."""
        if not self.track:
            return
        owner, alias = self._owner, self._alias
        if len(ids) == 1:
            for value in ids.values():
                value = alias.get(value, value)
                if owner.get(value) == who:
                    self._seen[value] = None
            return
        mine = [v for v in map(alias.get, ids.values(), ids.values()) if owner.get(v) == who]
        self._seen.update(dict.fromkeys(mine))
        self._edges.update(dict.fromkeys(pairwise(mine)))

    def enter(self, who: int, stage: str, t: float) -> None:
        if self.track:
            seg, arrived, stages, outcome, ended, causes = self._records[who]
            self._records[who] = (seg, arrived, (*stages, (stage, t)), outcome, ended, causes)

    def finish(self, who: int, outcome: str, t: float, causes: tuple[str, ...] = ()) -> None:
        if self.track:
            seg, arrived, stages, *_ = self._records[who]
            self._records[who] = (seg, arrived, stages, outcome, t, causes)

    def holdings(self) -> dict[int, list[str]]:
        """Each customer's ``type:value`` identifiers (shared ones listed for every owner)."""
        held: dict[int, list[str]] = {}
        for value, who in self._owner.items():
            for owner in self.owners.get(value, (who,)):
                held.setdefault(owner, []).append(f"{self.types[value]}:{value}")
        return held

    def owner_of(self, value: str) -> int | None:
        return self._owner.get(self._alias.get(value, value))

    def components(self) -> list[tuple[int, list[str]]]:
        """The best achievable identity clusters: (customer, sorted ``type:value`` list)."""
        parent = {v: v for v in self._seen if v not in self.owners}

        def find(v: str) -> str:
            while parent[v] != v:
                parent[v] = parent[parent[v]]
                v = parent[v]
            return v

        for a, b in self._edges:
            if a in parent and b in parent:
                parent[find(a)] = find(b)
        groups: dict[str, list[str]] = {}
        for v in parent:
            groups.setdefault(find(v), []).append(f"{self.types[v]}:{v}")
        return sorted((self._owner[root], sorted(vs)) for root, vs in groups.items())


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
