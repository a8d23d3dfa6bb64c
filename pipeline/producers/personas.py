"""Personas: who the simulated customers are and what they do.

A :class:`Customer` belongs to a :class:`Segment` (channel preferences, patience on hold,
basket size) and holds 1-3 emails, 1-2 phones, a rotating cookie (``anonymous_id``) and,
once earned, a ``chat_visitor_id`` (first chat), a ``user_id`` (signup) and a ``crm_id``
(first purchase). Identifier values come from :class:`IdFactory`: a counter per kind through
a seeded bijection, so they look random, never collide by accident and reveal nothing about
the customer; only the adversarial cases (:mod:`pipeline.producers.adversarial`) share them.

:func:`journey` yields one customer's events (:class:`Draft`) stage by stage: sessions on the
channels the segment prefers, then a drop-off decision raised by the pains met in the stage
(:data:`DROP_OFF_CAUSES`) and by incidents. The shared services (randomness, ids, truth,
drop-off model) come from :class:`pipeline.producers.simulator.World`.
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from pipeline.producers.adversarial import FORWARDED, LINK, TYPO

if TYPE_CHECKING:
    from _typeshed import SupportsLenAndGetItem

    from pipeline.producers.simulator import World

T = TypeVar("T")

Stage = Literal["awareness", "consideration", "purchase", "retention", "advocacy"]
STAGES: tuple[Stage, ...] = ("awareness", "consideration", "purchase", "retention", "advocacy")
CHANNEL_ORDER = ("web", "chat", "email", "call_center")
"""The order of the preference weights in :attr:`Segment.channels`."""


class Draft(NamedTuple):
    """One contract event before it is serialised: what a journey yields."""

    t: float
    """Seconds since the simulated start."""
    channel: str
    event_type: str
    ids: dict[str, str]
    """Identifiers as they appear in the payload (shared, never mutated)."""
    props: dict[str, Any]
    who: int
    """The true customer behind the event."""
    tag: str | None = None
    """An adversarial or link marker kept in the ground truth (``None`` for plain events)."""


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    weight: float
    """Share of the customers."""
    ages: tuple[int, int]
    channels: tuple[float, float, float, float]
    """Preference weights in :data:`CHANNEL_ORDER` order."""
    patience: float
    """Seconds on hold before hanging up."""
    basket: tuple[float, float]
    """Order value range in USD."""
    work_email: float
    """Probability that an address is at a company domain."""


SEGMENTS: dict[str, Segment] = {
    s.name: s
    for s in (
        Segment("young_digital", 0.30, (18, 29), (0.55, 0.30, 0.10, 0.05), 240.0, (15, 120), 0.05),
        Segment("family", 0.30, (30, 49), (0.45, 0.15, 0.25, 0.15), 420.0, (40, 320), 0.10),
        Segment("professional", 0.25, (28, 60), (0.45, 0.10, 0.30, 0.15), 360.0, (80, 900), 0.60),
        Segment("senior", 0.15, (65, 88), (0.25, 0.05, 0.25, 0.45), 900.0, (20, 200), 0.02),
    )
}
_SEGMENT_LIST = tuple(SEGMENTS.values())
_SEGMENT_CUM = tuple(accumulate(s.weight for s in _SEGMENT_LIST))

STAGE_CHANNELS: dict[Stage, tuple[int, int, int, int]] = {
    "awareness": (1, 0, 1, 0),
    "consideration": (1, 1, 1, 1),
    "purchase": (1, 0, 0, 1),
    "retention": (1, 1, 1, 1),
    "advocacy": (1, 0, 1, 1),
}
"""Which channels a stage's sessions may use (web, chat, email, call_center)."""
_CHANNEL_CUM: dict[tuple[str, Stage], tuple[float, ...]] = {
    (seg.name, stage): tuple(accumulate(w * m for w, m in zip(seg.channels, mask, strict=True)))
    for seg in _SEGMENT_LIST
    for stage, mask in STAGE_CHANNELS.items()
}

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


class SimRandom(random.Random):
    """``random.Random`` with cheaper ``randint`` and ``choice`` (one ``random()`` call each,
    no rejection loop): the simulator draws several numbers per event."""

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1))

    def choice(self, seq: SupportsLenAndGetItem[T]) -> T:
        return seq[int(self.random() * len(seq))]


def pick_segment(rng: random.Random) -> Segment:
    return _SEGMENT_LIST[bisect(_SEGMENT_CUM, rng.random() * _SEGMENT_CUM[-1])]


def pick_channel(rng: random.Random, segment: Segment, stage: Stage) -> str:
    """A channel for one session, by the segment's preferences among the stage's channels."""
    cum = _CHANNEL_CUM[segment.name, stage]
    return CHANNEL_ORDER[bisect(cum, rng.random() * cum[-1])]


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


# --- what a customer does ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DropOffCause:
    """A built-in cause of drop-off: a stage whose events show it has its drop-off multiplied."""

    name: str
    events: tuple[tuple[str, str], ...]
    """(channel, event_type) pairs that can show the cause."""
    field: str | None
    """The property tested (None: the event itself shows it)."""
    op: Literal[">", "<=", "=="] | None
    value: float | bool | None
    multiplier: float

    @property
    def condition(self) -> str:
        return "any" if self.field is None else f"{self.field} {self.op} {self.value}"

    def matches(self, channel: str, event_type: str, properties: dict[str, Any]) -> bool:
        """Whether an event shows this cause."""
        if (channel, event_type) not in self.events:
            return False
        if self.field is None:
            return True
        got = properties.get(self.field)
        if got is None:
            return False
        if self.op == ">":
            return bool(got > self.value)
        if self.op == "<=":
            return bool(got <= self.value)
        return bool(got == self.value)


DROP_OFF_CAUSES: dict[str, DropOffCause] = {
    c.name: c
    for c in (
        DropOffCause("long_phone_hold", (("call_center", "call_started"),), "wait_seconds", ">",
                     300.0, 2.5),
        DropOffCause("unresolved_chat", (("chat", "chat_ended"),), "resolved", "==", False, 2.0),
        DropOffCause("email_bounced", (("email", "email_bounced"),), None, None, None, 1.8),
        DropOffCause("low_csat", (("chat", "chat_ended"), ("call_center", "call_ended")), "csat",
                     "<=", 2, 1.5),
    )
}  # fmt: skip
"""Causes, strongest first: a pain-point ranking over the simulated data should find them.
Each multiplies the drop-off of the stage in which the customer met it (once per stage)."""
LONG_HOLD_SECONDS = 300.0
MAX_DROPOFF = 0.95


CAMPAIGNS = ("spring_sale", "new_arrivals", "loyalty_bonus", "webinar_q3", "free_shipping")
AD_SOURCES = ("google", "meta", "tiktok", "linkedin")
REFERRERS = ("https://www.google.com/", "https://www.bing.com/", "https://t.co/", "")
PAGES = ("/", "/products", "/pricing", "/blog/how-to-choose", "/about", "/faq", "/contact")
ACCOUNT_PAGES = ("/account", "/account/orders", "/account/settings", "/help", "/products")
QUERIES = ("wireless headphones", "gift ideas", "warranty", "size guide", "bundle deals")
PRODUCTS = tuple((f"sku-{i:03d}", round(9.99 + (i * 37 % 100) * 9.0, 2)) for i in range(60))
_SEGMENT_PRODUCTS = {
    s.name: tuple(p for p in PRODUCTS if s.basket[0] <= p[1] <= s.basket[1]) for s in _SEGMENT_LIST
}


OUTCOMES = ("resolved", "unresolved", "escalated")
_OUTCOME_CUM = (0.72, 0.9)
_CART_SIZE_CUM = (0.6, 0.9)
"""Cumulative shares of 1 and 2 items in a cart (the rest: 3)."""

Session = Generator[Draft, None, None]
StageRun = Generator[Draft, None, bool]
"""A stage's events; returns whether the customer goes on to the next stage."""


def journey(c: Customer, w: World) -> Iterator[Draft]:
    """The events of one customer in occurred order, until they drop off or advocate."""
    for i, stage in enumerate(STAGES):
        if i:
            w.gap(c)
        c.pains.clear()
        w.ledger.enter(c.idx, stage, c.t)
        if not (yield from _RUNNERS[stage](c, w)):
            return


# --- stages ------------------------------------------------------------------------------------
def _sessions(c: Customer, w: World, stage: Stage, low: int, high: int) -> StageRun:
    """``low`` to ``high`` sessions, each on a channel the customer prefers, then the
    stage's drop-off decision."""
    for i in range(w.rng.randint(low, high)):
        if i:
            w.gap(c)
        yield from _SESSIONS[stage, w.channel(c, stage)](c, w)
    return w.advances(c, stage)


def _awareness(c: Customer, w: World) -> StageRun:
    return _sessions(c, w, "awareness", 1, 2)


def _consideration(c: Customer, w: World) -> StageRun:
    return _sessions(c, w, "consideration", 1, 3)


def _purchase(c: Customer, w: World) -> StageRun:
    """A sales call for phone people, then the web checkout; abandonment is the drop-off."""
    if w.channel(c, "purchase") == "call_center":
        yield from _call(c, w, "sales")
        w.gap(c)
    ids, tag = yield from _open_web(c, w, 1.0)
    if c.user_id is None:
        ids = yield from _signup(c, w, ids, tag)
    total = yield from _cart(c, w, ids, tag)
    if not w.advances(c, "purchase"):
        return False
    yield from _order(c, w, ids, tag, total)
    return True


def _retention(c: Customer, w: World) -> StageRun:
    return _sessions(c, w, "retention", 1, 3)


def _advocacy(c: Customer, w: World) -> StageRun:
    """A review or referral on the web, or a support call rated as a promoter (NPS 9-10)."""
    channel = w.channel(c, "advocacy")
    if channel == "call_center":
        yield from _call(c, w, "support", promoter=True)
    else:
        if channel == "email":
            yield from _newsletter(c, w, click=True)
            w.gap(c)
        yield from _advocate(c, w)
    w.end(c, "completed")
    return True


_RUNNERS: dict[Stage, Callable[[Customer, World], StageRun]] = {
    "awareness": _awareness,
    "consideration": _consideration,
    "purchase": _purchase,
    "retention": _retention,
    "advocacy": _advocacy,
}


# --- web sessions ------------------------------------------------------------------------------
WebStart = Generator[Draft, None, tuple[dict[str, str], str | None]]
WebSignup = Generator[Draft, None, dict[str, str]]


def _open_web(c: Customer, w: World, login: float) -> WebStart:
    """A web session's cookie, logged in (a ``login`` event) with probability ``login``."""
    cookie, tag = w.cookie(c)
    if c.user_id is None or w.rng.random() >= login:
        return {"anonymous_id": cookie}, tag
    ids = {"anonymous_id": cookie, "user_id": c.user_id}
    yield w.ev(c, 0.0, "web", "login", ids, {}, tag)
    return ids, tag


def _visit(c: Customer, w: World) -> Session:
    """Awareness on the web: an ad click or a referral, then a few pages."""
    rng = w.rng
    ids, tag = yield from _open_web(c, w, 0.3)
    if rng.random() < 0.6:
        campaign = rng.choice(CAMPAIGNS)
        anon = {"anonymous_id": ids["anonymous_id"]}
        yield w.ev(c, 0.0, "web", "ad_click", anon, {"campaign": campaign}, tag)
        source = rng.choice(AD_SOURCES)
        landing = {"url": f"/landing/{campaign}", "utm_source": source, "utm_medium": "cpc",
                   "utm_campaign": campaign}  # fmt: skip
    else:
        landing = {"url": "/", "referrer": rng.choice(REFERRERS)}
    yield w.click(c, "web", "page_view", ids, landing, tag)
    for _ in range(rng.randint(0, 3)):
        yield w.click(c, "web", "page_view", ids, {"url": rng.choice(PAGES)}, tag)


def _research(c: Customer, w: World) -> Session:
    """Consideration on the web: products, pricing, search, maybe a signup."""
    rng = w.rng
    ids, tag = yield from _open_web(c, w, 0.6)
    products = _SEGMENT_PRODUCTS[c.segment.name]
    for _ in range(rng.randint(1, 4)):
        sku, price = rng.choice(products)
        props = {"product_id": sku, "price": price}
        yield w.click(c, "web", "product_view", ids, props, tag)
    if rng.random() < 0.5:
        yield w.click(c, "web", "pricing_view", ids, {"url": "/pricing"}, tag)
    if rng.random() < 0.3:
        yield w.click(c, "web", "search", ids, {"query": rng.choice(QUERIES)}, tag)
    if c.user_id is None and rng.random() < 0.35:
        yield from _signup(c, w, ids, tag)


def _signup(c: Customer, w: World, ids: dict[str, str], tag: str | None) -> WebSignup:
    """Create the account: the event links cookie, user_id and email."""
    c.user_id = w.new_id(c, "user_id")
    anon = ids["anonymous_id"]
    link = {"anonymous_id": anon, "user_id": c.user_id, "email": w.show_email(c.emails[0])}
    yield w.click(c, "web", "signup", link, {}, tag or LINK)
    return {"anonymous_id": anon, "user_id": c.user_id}


def _cart(
    c: Customer, w: World, ids: dict[str, str], tag: str | None
) -> Generator[Draft, None, float]:
    rng, total = w.rng, 0.0
    products = _SEGMENT_PRODUCTS[c.segment.name]
    for _ in range(1 + bisect(_CART_SIZE_CUM, rng.random())):
        sku, price = rng.choice(products)
        quantity = 1 if rng.random() < 0.85 else 2
        props = {"product_id": sku, "price": price, "quantity": quantity}
        yield w.click(c, "web", "add_to_cart", ids, props, tag)
        total += price * quantity
    total = round(total, 2)
    yield w.click(c, "web", "checkout_started", ids, {"cart_value": total}, tag)
    return total


def _order(c: Customer, w: World, ids: dict[str, str], tag: str | None, total: float) -> Session:
    """The purchase (a crm_id from the first one on) and its confirmation email."""
    rng = w.rng
    if c.crm_id is None:
        c.crm_id = w.new_id(c, "crm_id")
    order = {"anonymous_id": ids["anonymous_id"], "user_id": str(c.user_id), "crm_id": c.crm_id}
    props = {"order_id": w.serial("ord-"), "revenue": total, "currency": "USD"}
    yield w.ev(c, rng.uniform(20, 180), "web", "purchase", order, props, tag or LINK)
    address = {"email": w.show_email(c.emails[0])}
    mail = {"campaign_id": "order_confirmation", "message_id": w.serial("msg-"),
            "kind": "transactional"}  # fmt: skip
    yield w.ev(
        c, rng.uniform(2, 20), "email", "email_sent", {**address, "crm_id": c.crm_id}, mail, LINK
    )
    yield w.ev(c, rng.uniform(1, 10), "email", "email_delivered", address, mail)
    if rng.random() < 0.6:
        yield w.ev(c, rng.uniform(30, 900), "email", "email_opened", address, mail)


def _account(c: Customer, w: World) -> Session:
    """Retention on the web: log in, look around, sometimes buy again."""
    rng = w.rng
    ids, tag = yield from _open_web(c, w, 0.9)
    for _ in range(rng.randint(1, 3)):
        yield w.click(c, "web", "page_view", ids, {"url": rng.choice(ACCOUNT_PAGES)}, tag)
    if "user_id" in ids and rng.random() < 0.35:
        total = yield from _cart(c, w, ids, tag)
        yield from _order(c, w, ids, tag, total)


def _advocate(c: Customer, w: World) -> Session:
    rng = w.rng
    ids, tag = yield from _open_web(c, w, 1.0)
    reviewed = rng.random() < 0.7
    if reviewed:
        props = {"rating": rng.choice((4, 5, 5)), "product_id": rng.choice(PRODUCTS)[0]}
        yield w.click(c, "web", "review_submitted", ids, props, tag)
    if not reviewed or rng.random() < 0.4:
        yield w.click(c, "web", "referral_sent", ids, {"via": "email"}, tag)


# --- email, chat and call sessions -----------------------------------------------------------
def _newsletter(c: Customer, w: World, click: bool) -> Session:
    """A marketing email: sent, then bounced or delivered, maybe opened and clicked."""
    rng = w.rng
    address, tag = w.mailbox(c)
    ids = {"email": address}
    props = {"campaign_id": rng.choice(CAMPAIGNS), "message_id": w.serial("msg-"),
             "kind": "marketing"}  # fmt: skip
    yield w.ev(c, 0.0, "email", "email_sent", ids, props, tag)
    if rng.random() < (0.7 if tag == TYPO else 0.03):
        bounce = {**props, "bounce_type": "hard" if tag == TYPO else "soft"}
        yield w.ev(c, rng.uniform(1, 60), "email", "email_bounced", ids, bounce, tag)
        c.pains.add("email_bounced")
        return
    yield w.ev(c, rng.uniform(1, 30), "email", "email_delivered", ids, props, tag)
    if tag == TYPO or rng.random() < 0.45:
        return
    yield w.ev(c, rng.uniform(60, 1800), "email", "email_opened", ids, props, tag)
    if click and rng.random() < 0.55:
        yield from _click(c, w, ids, props)


def _click(c: Customer, w: World, ids: dict[str, str], props: dict[str, Any]) -> Session:
    """The click and its landing page, which may carry the email (a link). A forwarded email
    is clicked by someone else, whose cookie then lands with this customer's email."""
    rng, campaign = w.rng, props["campaign_id"]
    clicked = {**props, "link_url": f"https://shop.example/{campaign}"}
    landing = {"url": f"/{campaign}", "utm_source": "newsletter", "utm_medium": "email",
               "utm_campaign": campaign}  # fmt: skip
    friend = w.adversary.forward_to(c)
    if friend is not None:
        yield w.ev(
            c, rng.uniform(300, 3600), "email", "email_clicked", ids, clicked, FORWARDED, friend.idx
        )
        shown = {"anonymous_id": friend.cookie, "email": ids["email"]}
        yield w.ev(c, rng.uniform(1, 5), "web", "page_view", shown, landing, FORWARDED, friend.idx)
        return
    yield w.ev(c, rng.uniform(5, 300), "email", "email_clicked", ids, clicked)
    web, tag = yield from _open_web(c, w, 0.5)
    if rng.random() < 0.5 and tag is None:
        web, tag = {"anonymous_id": web["anonymous_id"], "email": ids["email"]}, LINK
    yield w.ev(c, rng.uniform(1, 5), "web", "page_view", web, landing, tag)


def _csat(rng: random.Random, good: bool, waited: bool) -> int | None:
    """A satisfaction score (1-5) from resolution and wait; ``None`` when not answered."""
    if rng.random() < 0.3:
        return None
    score = (5 if good else 2) - int(waited) + rng.choice((-1, 0, 0, 1))
    return max(1, min(5, score))


def _chat(c: Customer, w: World, topic: str) -> Session:
    rng = w.rng
    if c.chat_id is None:
        c.chat_id = w.new_id(c, "chat_visitor_id")
    ids, tag = {"chat_visitor_id": c.chat_id}, None
    if rng.random() < 0.3:
        ids["email"], tag = w.show_email(rng.choice(c.emails)), LINK
    conv = w.serial("conv-")
    wait = rng.lognormvariate(3.2, 0.8)
    start = {"conversation_id": conv, "topic": topic, "wait_seconds": round(wait, 1)}
    yield w.ev(c, 0.0, "chat", "chat_started", ids, start, tag)
    c.t += wait
    for i in range(rng.randint(2, 8)):
        said = {"conversation_id": conv, "sender": "agent" if i % 2 else "customer"}
        yield w.ev(c, rng.uniform(5, 45), "chat", "chat_message", ids, said)
    resolved = rng.random() < (0.82 if wait < 120 else 0.55)
    csat = _csat(rng, resolved, wait >= 120)
    mood = rng.uniform(0.1, 0.9) if resolved else rng.uniform(-0.9, 0.2)
    end: dict[str, Any] = {
        "conversation_id": conv,
        "resolved": resolved,
        "sentiment": round(mood, 2),
    }
    if csat is not None:
        end["csat"] = csat
    yield w.ev(c, rng.uniform(5, 30), "chat", "chat_ended", ids, end)
    if not resolved:
        c.pains.add("unresolved_chat")
    if csat is not None and csat <= 2:
        c.pains.add("low_csat")


def _call(c: Customer, w: World, queue: str, promoter: bool = False) -> Session:
    """A call: queue (hold), then talk or hang up; holds over 300 s are a pain."""
    rng = w.rng
    phone, tag = w.caller(c)
    ids = {"phone": phone}
    if c.crm_id is not None and rng.random() < 0.5:
        ids["crm_id"], tag = c.crm_id, tag or LINK
    call_id = w.serial("call-")
    hold = rng.uniform(5, 60) if promoter else rng.lognormvariate(4.6, 0.9)
    wait = min(hold, c.segment.patience)
    start = {"call_id": call_id, "queue": queue, "wait_seconds": round(wait, 1)}
    yield w.ev(c, 0.0, "call_center", "call_started", ids, start, tag)
    if wait > LONG_HOLD_SECONDS:
        c.pains.add("long_phone_hold")
    if hold > wait:
        hung_up = {"call_id": call_id, "duration_seconds": 0.0, "outcome": "abandoned"}
        yield w.ev(c, wait, "call_center", "call_ended", ids, hung_up, tag)
        return
    talk = rng.uniform(60, 900)
    props = _call_end(c, rng, call_id, wait, talk, promoter)
    yield w.ev(c, wait + talk, "call_center", "call_ended", ids, props, tag)


def _call_end(
    c: Customer, rng: random.Random, call_id: str, wait: float, talk: float, promoter: bool
) -> dict[str, Any]:
    """The end of an answered call: outcome, CSAT and sometimes NPS (9-10 for promoters)."""
    outcome = "resolved" if promoter else OUTCOMES[bisect(_OUTCOME_CUM, rng.random())]
    csat = 5 if promoter else _csat(rng, outcome == "resolved", wait > 180)
    props: dict[str, Any] = {"call_id": call_id, "duration_seconds": round(talk, 1),
                             "outcome": outcome}  # fmt: skip
    if csat is not None:
        props["csat"] = csat
        if csat <= 2:
            c.pains.add("low_csat")
    if promoter:
        props["nps"] = rng.randint(9, 10)
    elif csat is not None and rng.random() < 0.3:
        props["nps"] = max(0, min(8, 2 * csat + rng.randint(-2, 0)))
    return props


def _news(c: Customer, w: World) -> Session:
    return _newsletter(c, w, click=False)


def _news_click(c: Customer, w: World) -> Session:
    return _newsletter(c, w, click=True)


def _presales_chat(c: Customer, w: World) -> Session:
    return _chat(c, w, "presales")


def _support_chat(c: Customer, w: World) -> Session:
    return _chat(c, w, "support")


def _sales_call(c: Customer, w: World) -> Session:
    return _call(c, w, "sales")


def _support_call(c: Customer, w: World) -> Session:
    return _call(c, w, "support")


_SESSIONS: dict[tuple[str, str], Callable[[Customer, World], Session]] = {
    ("awareness", "web"): _visit,
    ("awareness", "email"): _news,
    ("consideration", "web"): _research,
    ("consideration", "chat"): _presales_chat,
    ("consideration", "email"): _news_click,
    ("consideration", "call_center"): _sales_call,
    ("retention", "web"): _account,
    ("retention", "chat"): _support_chat,
    ("retention", "email"): _news_click,
    ("retention", "call_center"): _support_call,
}
