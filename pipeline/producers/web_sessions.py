"""Web sessions of a journey: landing, research, signup, cart and order, account visits
and advocacy, each yielding :class:`~pipeline.producers.segments.Draft` events."""

from __future__ import annotations

from bisect import bisect
from collections.abc import Generator
from typing import TYPE_CHECKING

from pipeline.producers.adversary import LINK
from pipeline.producers.identities import Customer
from pipeline.producers.segments import _SEGMENT_LIST, Draft, Session

if TYPE_CHECKING:
    from pipeline.producers.world import World

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


_CART_SIZE_CUM = (0.6, 0.9)
"""Cumulative shares of 1 and 2 items in a cart (the rest: 3)."""


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
    """The purchase, at the end of the payment (a crm_id from the first one on), and its
    confirmation email."""
    rng = w.rng
    if c.crm_id is None:
        c.crm_id = w.new_id(c, "crm_id")
    order = {"anonymous_id": ids["anonymous_id"], "user_id": str(c.user_id), "crm_id": c.crm_id}
    props = {"order_id": w.serial("ord-"), "revenue": total, "currency": "USD"}
    yield w.ev(c, 0.0, "web", "purchase", order, props, tag or LINK)
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
        w.pay(c)
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
