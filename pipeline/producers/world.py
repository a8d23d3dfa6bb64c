"""What every journey shares (:class:`World`): randomness, identifiers, truth, adversary
and the drop-off model (:class:`DropModel`)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pipeline.producers.adversary import HOUSEHOLD, SHARED_DEVICE, SWITCHBOARD, TYPO, Adversary
from pipeline.producers.identities import Customer, IdFactory
from pipeline.producers.segments import DROP_OFF_CAUSES, MAX_DROPOFF, Draft, Stage, pick_channel
from pipeline.producers.sim_models import SimulationConfig
from pipeline.producers.truth_ledger import TruthLedger

_tuple_new = tuple.__new__
"""Builds a NamedTuple from a tuple of its fields, skipping the Python-level ``__new__``."""

SHARED_PHONE_USE = {SWITCHBOARD: 0.85, HOUSEHOLD: 0.5}
"""How often a customer with a shared phone calls from it rather than their own."""


# --- shared services of the journeys ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DropModel:
    """Drop-off probability per stage, raised by the customer's pains and by incidents."""

    base: dict[str, float]
    """Drop-off probability at each stage."""
    incidents: tuple[tuple[str, float, float, float], ...] = ()
    """(stage, start second, end second, multiplier)."""

    @classmethod
    def of(cls, config: SimulationConfig) -> DropModel:
        base = {stage: 1.0 - p for stage, p in config.conversion.model_dump().items()}
        incidents = tuple(
            (i.stage, i.start_minute * 60, i.end_minute * 60, i.dropoff_multiplier)
            for i in config.incidents
        )
        return cls(base, incidents)

    def probability(self, stage: str, t: float, pains: set[str]) -> float:
        p = self.base.get(stage, 0.0)
        for pain in pains:
            p *= DROP_OFF_CAUSES[pain].multiplier
        for inc_stage, start, end, multiplier in self.incidents:
            if inc_stage == stage and start <= t < end:
                p *= multiplier
        return min(p, MAX_DROPOFF)


class World:
    """What every journey shares: randomness, identifiers, truth, adversary, drop-off."""

    def __init__(
        self,
        rng: random.Random,
        ids: IdFactory,
        ledger: TruthLedger,
        adversary: Adversary,
        drops: DropModel,
        mean_gap: float,
    ) -> None:
        self.rng, self.ids, self.ledger, self.adversary = rng, ids, ledger, adversary
        self.drops = drops
        self._gap_rate = 1.0 / mean_gap
        self._serial = 0

    def admit(self, c: Customer) -> None:
        """Register a newly arrived customer and everything it holds."""
        self.adversary.equip(c)
        self.ledger.start(c.idx, c.segment.name, c.t)
        for id_type, value in c.identifiers():
            self.ledger.own(id_type, value, c.idx, c.special.get(value))

    def new_id(self, c: Customer, id_type: str) -> str:
        value: str = getattr(self.ids, id_type)()
        self.ledger.own(id_type, value, c.idx)
        return value

    def serial(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial:07x}"

    def gap(self, c: Customer) -> None:
        c.t += max(20.0, self.rng.expovariate(self._gap_rate))

    def click(
        self, c: Customer, channel: str, event_type: str, ids: dict[str, str],
        props: dict[str, Any], tag: str | None = None,
    ) -> Draft:  # fmt: skip
        """The customer's next event, a few seconds to a minute after the last."""
        c.t += 3.0 + 72.0 * self.rng.random()
        if "user_id" in ids or "crm_id" in ids:
            props = {**props, "segment": c.segment.name}
        return _tuple_new(Draft, (c.t, channel, event_type, ids, props, c.idx, tag))

    def channel(self, c: Customer, stage: Stage) -> str:
        return pick_channel(self.rng, c.segment, stage)

    def ev(
        self, c: Customer, dt: float, channel: str, event_type: str, ids: dict[str, str],
        props: dict[str, Any], tag: str | None = None, who: int | None = None,
    ) -> Draft:  # fmt: skip
        c.t += dt
        who = c.idx if who is None else who
        if "user_id" in ids or "crm_id" in ids:  # an identified event: the CRM knows the segment
            props = {**props, "segment": c.segment.name}
        return _tuple_new(Draft, (c.t, channel, event_type, ids, props, who, tag))

    def cookie(self, c: Customer) -> tuple[str, str | None]:
        """The cookie of a new web session: the shared device's or the customer's own."""
        if c.shared_cookie is not None and self.rng.random() < 0.5:
            return c.shared_cookie, SHARED_DEVICE
        c.cookie_left -= 1
        if c.cookie_left < 0:
            c.cookie = self.new_id(c, "anonymous_id")
            c.cookie_left = self.rng.randint(1, 4)
        return c.cookie, None

    def caller(self, c: Customer) -> tuple[str, str | None]:
        """The number a call comes from, as the phone system shows it, and its tag."""
        phone = c.shared_phone
        if phone is None or self.rng.random() >= SHARED_PHONE_USE[c.special[phone]]:
            phone = c.phones[0] if len(c.phones) == 1 else self.rng.choice(c.phones)
        return self.show_phone(phone), c.special.get(phone)

    def mailbox(self, c: Customer) -> tuple[str, str | None]:
        """The address a marketing email goes to, and its tag."""
        if c.typo_email is not None and self.rng.random() < 0.5:
            return c.typo_email, TYPO
        first = len(c.emails) == 1 or self.rng.random() < 0.6
        return self.show_email(c.emails[0] if first else self.rng.choice(c.emails)), None

    def show_phone(self, phone: str) -> str:
        r = self.rng.random()
        if r >= 0.2:
            return phone
        sep = f"({phone[2:5]}) " if r < 0.12 else f"{phone[2:5]}-"
        shown = f"{sep}{phone[5:8]}-{phone[8:]}"
        self.ledger.alias(shown, phone)
        return shown

    def show_email(self, email: str) -> str:
        if self.rng.random() >= 0.08:
            return email
        shown = email.capitalize()
        self.ledger.alias(shown, email)
        return shown

    def advances(self, c: Customer, stage: Stage) -> bool:
        """Whether ``c`` goes on past ``stage``; if not, the journey ends here."""
        if self.rng.random() >= self.drops.probability(stage, c.t, c.pains):
            return True
        self.end(c, "dropped", tuple(sorted(c.pains)))
        return False

    def pays(self, c: Customer) -> bool:
        """Whether the first checkout of ``c`` goes through. The customer fills in the payment
        form (20 s to 3 min) and the outcome is decided when the payment is made, so an
        incident that breaks checkouts hits the payments made while it lasts; ``c.t`` ends
        at the payment. Without a purchase incident the moment changes nothing, and the
        draws keep the order of earlier versions: a seed gives the same events as before."""
        timed = any(stage == "purchase" for stage, *_ in self.drops.incidents)
        if timed:
            self.pay(c)
        if not self.advances(c, "purchase"):
            return False
        if not timed:
            self.pay(c)
        return True

    def pay(self, c: Customer) -> None:
        """The customer fills in the payment form: 20 s to 3 min."""
        c.t += self.rng.uniform(20, 180)

    def end(self, c: Customer, outcome: str, causes: tuple[str, ...] = ()) -> None:
        self.ledger.finish(c.idx, outcome, c.t, causes)
        self.adversary.retire(c)
