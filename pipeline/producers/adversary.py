"""Adversarial identities: shared, misleading and late identifiers (off unless asked for).

Household and company switchboard phones shared by many people, shared devices, forwarded
emails clicked by someone else, recycled phone numbers, placeholder ids, typo'd emails and
late link events. The event tags below are kept per event in the ground truth.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from pipeline.producers.identities import Customer, IdFactory

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
