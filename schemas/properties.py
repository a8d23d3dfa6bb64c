"""Typed properties per event type: the catalogue of the contract (schema v1).

Every model keeps unknown keys (``extra="allow"``) so producers may send more than the
catalogue names; known keys are type-checked. All fields are optional unless the contract
says otherwise, so a producer that knows less still gets its events in.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Properties(BaseModel):
    """Base of all property models; also the model of event types outside the catalogue."""

    model_config = ConfigDict(frozen=True, extra="allow")


# --- web -----------------------------------------------------------------------------------
class PageView(Properties):
    url: str | None = None
    referrer: str | None = None
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None


class AdClick(Properties):
    campaign: str | None = None


class ProductView(Properties):
    product_id: str | None = None
    price: float | None = Field(None, ge=0)


class Search(Properties):
    query: str | None = None


class AddToCart(Properties):
    product_id: str | None = None
    price: float | None = Field(None, ge=0)
    quantity: int | None = Field(None, ge=1)


class CheckoutStarted(Properties):
    cart_value: float | None = Field(None, ge=0)


class Purchase(Properties):
    order_id: str | None = None
    revenue: float | None = Field(None, ge=0)
    currency: str | None = Field(None, min_length=3, max_length=3)


class ReviewSubmitted(Properties):
    rating: int | None = Field(None, ge=1, le=5)


# --- chat ----------------------------------------------------------------------------------
class ChatStarted(Properties):
    conversation_id: str | None = None
    topic: Literal["presales", "support"] | None = None
    wait_seconds: float | None = Field(None, ge=0)


class ChatMessage(Properties):
    conversation_id: str | None = None
    sender: Literal["customer", "agent"] | None = None


class ChatEnded(Properties):
    conversation_id: str | None = None
    resolved: bool | None = None
    csat: int | None = Field(None, ge=1, le=5)
    sentiment: float | None = Field(None, ge=-1, le=1)


# --- email ---------------------------------------------------------------------------------
class EmailProperties(Properties):
    campaign_id: str | None = None
    message_id: str | None = None
    kind: Literal["marketing", "transactional"] | None = None


class EmailClicked(EmailProperties):
    link_url: str | None = None


class EmailBounced(EmailProperties):
    bounce_type: str | None = None


# --- call center ---------------------------------------------------------------------------
class CallStarted(Properties):
    call_id: str | None = None
    queue: Literal["sales", "support"] | None = None
    wait_seconds: float | None = Field(None, ge=0)


class CallEnded(Properties):
    call_id: str | None = None
    duration_seconds: float | None = Field(None, ge=0)
    outcome: Literal["resolved", "unresolved", "escalated", "abandoned"] | None = None
    csat: int | None = Field(None, ge=1, le=5)
    nps: int | None = Field(None, ge=0, le=10)


CATALOGUE: dict[str, dict[str, type[Properties]]] = {
    "web": {
        "page_view": PageView,
        "ad_click": AdClick,
        "product_view": ProductView,
        "pricing_view": Properties,
        "search": Search,
        "signup": Properties,
        "login": Properties,
        "add_to_cart": AddToCart,
        "checkout_started": CheckoutStarted,
        "purchase": Purchase,
        "review_submitted": ReviewSubmitted,
        "referral_sent": Properties,
    },
    "chat": {
        "chat_started": ChatStarted,
        "chat_message": ChatMessage,
        "chat_ended": ChatEnded,
    },
    "email": {
        "email_sent": EmailProperties,
        "email_delivered": EmailProperties,
        "email_opened": EmailProperties,
        "email_clicked": EmailClicked,
        "email_bounced": EmailBounced,
        "email_unsubscribed": EmailProperties,
    },
    "call_center": {
        "call_started": CallStarted,
        "call_ended": CallEnded,
    },
}


def properties_model(channel: str, event_type: str) -> type[Properties] | None:
    """The model for a catalogued event type, or None for a type outside the catalogue."""
    return CATALOGUE.get(channel, {}).get(event_type)
