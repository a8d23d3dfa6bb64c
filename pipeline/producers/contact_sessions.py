"""Email, chat and call sessions of a journey, and the table of which session a stage
runs on each channel (:data:`SESSIONS`)."""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pipeline.producers.adversary import FORWARDED, LINK, TYPO
from pipeline.producers.identities import Customer
from pipeline.producers.segments import LONG_HOLD_SECONDS, Session
from pipeline.producers.web_sessions import (
    CAMPAIGNS,
    _account,
    _open_web,
    _research,
    _visit,
)

if TYPE_CHECKING:
    from pipeline.producers.world import World

OUTCOMES = ("resolved", "unresolved", "escalated")
_OUTCOME_CUM = (0.72, 0.9)


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
