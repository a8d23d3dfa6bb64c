"""Identifier generation and the simulated customer who holds them.

A :class:`Customer` holds 1-3 emails, 1-2 phones, a rotating cookie (``anonymous_id``) and,
once earned, a ``chat_visitor_id`` (first chat), a ``user_id`` (signup) and a ``crm_id``
(first purchase). Identifier values come from :class:`IdFactory`: a counter per kind through
a seeded bijection, so they look random, never collide by accident and reveal nothing about
the customer; only the adversarial cases (:mod:`pipeline.producers.adversary`) share them.
"""

from __future__ import annotations

import random
from bisect import bisect

from pipeline.producers.segments import pick_segment

FIRST_NAMES = (
    "maria", "james", "wei", "aisha", "lucas", "sofia", "omar", "emma", "raj", "chloe", "diego",
    "hana", "noah", "fatima", "liam", "yuki", "ethan", "zara", "mateo", "grace", "ivan", "amara",
    "leo", "nina",
)  # fmt: skip
LAST_NAMES = (
    "garcia", "smith", "chen", "khan", "silva", "rossi", "nguyen", "brown", "patel", "muller",
    "kim", "okafor", "jones", "haddad", "novak", "tanaka", "lopez", "wilson", "ali", "dubois",
)  # fmt: skip
MAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me")
WORK_DOMAINS = ("globex.com", "initech.com", "umbrella-corp.com", "hooli.io", "acme.co")
AREA_CODES = (
    201, 202, 206, 212, 213, 214, 303, 305, 312, 404, 415,
    503, 512, 602, 617, 702, 713, 718, 773, 818, 917, 919,
)  # fmt: skip
_LINES_PER_AREA = 800 * 10_000
_PHONE_SPACE = len(AREA_CODES) * _LINES_PER_AREA
_EMAIL_SPACE = 10**7
_EMAIL_COUNT_CUM = (0.5, 0.85)
"""Cumulative shares of customers with 1 and 2 email addresses (the rest: 3)."""


def _scramble(n: int, bits: int, salt: int) -> int:
    """A bijection of ``[0, 2**bits)`` (odd multiplies and xor-shifts), keyed by ``salt``."""
    mask = (1 << bits) - 1
    x = ((n + salt) * 0x9E3779B97F4A7C15F39CC0605CEDC835) & mask
    x ^= x >> (bits // 2)
    x = (x * 0xBF58476D1CE4E5B9D6E8FEB86659FD93) & mask
    return x ^ (x >> (bits // 3))


class IdFactory:
    """Unique identifier values, deterministic for a salt."""

    def __init__(self, salt: int) -> None:
        self._counts: dict[str, int] = {}
        kinds = ("anon", "user", "crm", "chat", "phone", "email")
        self._salts = {k: _scramble(i, 32, salt & 0xFFFF_FFFF) for i, k in enumerate(kinds)}
        """A salt per kind, so no two kinds of value share digits."""

    def _next(self, kind: str) -> int:
        n = self._counts.get(kind, 0)
        self._counts[kind] = n + 1
        return n + self._salts[kind]

    def anonymous_id(self) -> str:
        h = f"{_scramble(self._next('anon'), 128, 0):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def user_id(self) -> str:
        return f"u_{_scramble(self._next('user'), 40, 0):010x}"

    def crm_id(self) -> str:
        return f"CRM{_scramble(self._next('crm'), 32, 0):010d}"

    def chat_visitor_id(self) -> str:
        return f"cv_{_scramble(self._next('chat'), 48, 0):012x}"

    def phone(self) -> str:
        """A US number in E.164 that phonenumbers accepts as valid."""
        index = self._next("phone") * 7_919_371 % _PHONE_SPACE
        area, rest = divmod(index, _LINES_PER_AREA)
        exchange, line = divmod(rest, 10_000)
        return f"+1{AREA_CODES[area]}{200 + exchange}{line:04d}"

    def email(self, first: str, last: str, domain: str) -> str:
        """A unique address: the digit suffix is a bijection of the counter."""
        num = self._next("email") * 48_271 % _EMAIL_SPACE
        style = num % 4
        if style == 0:
            local = f"{first}.{last}{num}"
        elif style == 1:
            local = f"{first[0]}{last}{num}"
        elif style == 2:
            local = f"{first}_{last[0]}{num}"
        else:
            local = f"{last}.{first}{num}"
        return f"{local}@{domain}"


class Customer:
    """One simulated person and the mutable state of their journey."""

    __slots__ = (
        "age", "chat_id", "cookie", "cookie_left", "crm_id", "emails", "first", "idx", "last",
        "pains", "phones", "segment", "shared_cookie", "shared_phone", "special", "t",
        "typo_email", "user_id",
    )  # fmt: skip

    def __init__(self, idx: int, t: float, rng: random.Random, ids: IdFactory) -> None:
        self.idx = idx
        self.t = t
        self.segment = pick_segment(rng)
        self.age = rng.randint(*self.segment.ages)
        self.first = rng.choice(FIRST_NAMES)
        self.last = rng.choice(LAST_NAMES)
        n_emails = 1 + bisect(_EMAIL_COUNT_CUM, rng.random())
        self.emails = [self._new_email(rng, ids) for _ in range(n_emails)]
        self.phones = [ids.phone() for _ in range(1 if rng.random() < 0.7 else 2)]
        self.cookie = ids.anonymous_id()
        self.cookie_left = rng.randint(2, 5)
        self.chat_id: str | None = None
        self.user_id: str | None = None
        self.crm_id: str | None = None
        self.pains: set[str] = set()
        self.shared_phone: str | None = None
        self.shared_cookie: str | None = None
        self.typo_email: str | None = None
        self.special: dict[str, str] = {}
        """Identifier value -> adversarial kind, for the values this customer shares."""

    def _new_email(self, rng: random.Random, ids: IdFactory) -> str:
        work = rng.random() < self.segment.work_email
        domain = rng.choice(WORK_DOMAINS if work else MAIL_DOMAINS)
        return ids.email(self.first, self.last, domain)

    def identifiers(self) -> list[tuple[str, str]]:
        """Every (type, value) the customer holds now."""
        held = [("email", e) for e in self.emails] + [("phone", p) for p in self.phones]
        optional = (
            ("anonymous_id", self.cookie),
            ("chat_visitor_id", self.chat_id),
            ("user_id", self.user_id),
            ("crm_id", self.crm_id),
            ("phone", self.shared_phone),
            ("anonymous_id", self.shared_cookie),
            ("email", self.typo_email),
        )
        return held + [(k, v) for k, v in optional if v is not None]
