"""The stage model: the shipped config, the documented mapping, conditions, bad configs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.journey import advance, dropped_off
from pipeline.journey_history import Gated
from pipeline.stage_model import DEFAULT_PATH, StageModel, load_stage_model
from schemas.events import Channel
from schemas.journey import Journey, JourneyState
from schemas.properties import CATALOGUE
from schemas.records import SourceRef, Touchpoint

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MODEL = load_stage_model()


def tp(
    channel: Channel,
    event_type: str,
    props: dict[str, Any] | None = None,
    minutes: float = 0,
    event_id: str = "e",
) -> Touchpoint:
    at = T0 + timedelta(minutes=minutes)
    return Touchpoint(
        event_id=event_id,
        occurred_at=at,
        received_at=at,
        channel=channel,
        event_type=event_type,
        known_type=True,
        identifiers={},
        properties=props or {},
        schema_version=1,
        src=SourceRef(topic="raw", partition=0, offset=0),
        customer_id="c1",
    )


def purchased() -> JourneyState:
    state = advance(None, [tp("web", "purchase", minutes=-60, event_id="p0")], MODEL).state
    assert state is not None
    return state


# The default mapping, as documented (docs table): (channel, event_type, properties,
# the customer has purchased before, expected stage).
MAPPING: list[tuple[Channel, str, dict[str, Any], bool, str | None]] = [
    ("web", "page_view", {}, False, "awareness"),
    ("web", "ad_click", {}, False, "awareness"),
    ("email", "email_opened", {"kind": "marketing"}, False, "awareness"),
    ("email", "email_opened", {"kind": "transactional"}, False, None),
    ("email", "email_opened", {}, False, None),
    ("web", "product_view", {}, False, "consideration"),
    ("web", "pricing_view", {}, False, "consideration"),
    ("email", "email_clicked", {}, False, "consideration"),
    ("chat", "chat_started", {"topic": "presales"}, False, "consideration"),
    ("call_center", "call_started", {"queue": "sales"}, False, "consideration"),
    ("web", "add_to_cart", {}, False, "purchase"),
    ("web", "checkout_started", {}, False, "purchase"),
    ("web", "purchase", {}, False, "purchase"),
    ("web", "purchase", {}, True, "retention"),
    ("web", "login", {}, False, None),
    ("web", "login", {}, True, "retention"),
    ("chat", "chat_started", {"topic": "support"}, False, "retention"),
    ("chat", "chat_started", {}, False, None),
    ("call_center", "call_started", {"queue": "support"}, False, "retention"),
    ("web", "review_submitted", {"rating": 4}, False, "advocacy"),
    ("web", "review_submitted", {"rating": 3}, False, None),
    ("web", "referral_sent", {}, False, "advocacy"),
    ("call_center", "call_ended", {"nps": 9}, False, "advocacy"),
    ("call_center", "call_ended", {"nps": 8}, False, None),
    ("call_center", "call_ended", {}, False, None),
    ("web", "search", {}, False, None),
    ("web", "signup", {}, False, None),
    ("chat", "chat_message", {}, False, None),
    ("chat", "chat_ended", {}, False, None),
    ("email", "email_sent", {}, False, None),
    ("email", "email_delivered", {}, False, None),
    ("email", "email_bounced", {}, False, None),
    ("email", "email_unsubscribed", {}, False, None),
]


def test_default_config_loads() -> None:
    model = load_stage_model(None)
    assert model.source == str(DEFAULT_PATH)
    assert model.stages == ("awareness", "consideration", "purchase", "retention", "advocacy")
    assert model.timeouts == {
        "awareness": timedelta(days=7),
        "consideration": timedelta(days=3),
        "purchase": timedelta(minutes=30),
        "retention": timedelta(days=30),
        "advocacy": None,
    }
    assert model.inactivity_gap == timedelta(days=30)
    assert model.completes == {("web", "purchase"): ("purchase",)}
    assert model.after_targets == {"purchase"} and model.repeat_pairs == {("web", "purchase")}
    assert model.plain[("web", "page_view")] == "awareness"  # precompiled: one lookup


def test_every_catalogue_event_type_is_documented() -> None:
    documented = {(channel, event_type) for channel, event_type, *_ in MAPPING}
    catalogue = {(ch, et) for ch, types in CATALOGUE.items() for et in types}
    assert catalogue == documented


@pytest.mark.parametrize(("channel", "event_type", "props", "bought", "expected"), MAPPING)
def test_catalogue_maps_as_documented(
    channel: Channel, event_type: str, props: dict[str, Any], bought: bool, expected: str | None
) -> None:
    state = purchased() if bought else None
    assert MODEL.stage_of(tp(channel, event_type, props), state) == expected


def test_after_stage_needs_the_stage_passed_before_the_event() -> None:
    state = purchased()  # the purchase is at -60 minutes
    assert MODEL.stage_of(tp("web", "login", minutes=-61), state) is None
    assert MODEL.stage_of(tp("web", "login", minutes=-60), state) is None  # same instant
    assert MODEL.stage_of(tp("web", "login", minutes=-59), state) == "retention"
    cart = advance(None, [tp("web", "add_to_cart", minutes=-60)], MODEL).state
    assert MODEL.stage_of(tp("web", "login"), cart) is None  # a cart is not a purchase


def test_checkout_drop_off_is_measurable() -> None:
    def journey(*events: Touchpoint) -> Journey:
        state = advance(None, events, MODEL).state
        assert state is not None
        return state.current

    view, cart = tp("web", "product_view", event_id="v"), tp("web", "add_to_cart", minutes=10)
    at = T0 + timedelta(minutes=10)
    assert dropped_off(journey(view, cart), at + timedelta(minutes=29), MODEL) is None
    assert dropped_off(journey(view, cart), at + timedelta(minutes=31), MODEL) == "purchase"
    bought = journey(view, cart, tp("web", "purchase", minutes=12, event_id="p"))
    assert dropped_off(bought, at + timedelta(days=300), MODEL) is None  # completed
    assert dropped_off(journey(view), T0 + timedelta(days=4), MODEL) == "consideration"
    review = tp("web", "review_submitted", {"rating": 5})
    assert dropped_off(journey(review), T0 + timedelta(days=999), MODEL) is None  # no timeout


def test_gated_rules_classify_to_steps_and_fallback() -> None:
    found = MODEL.classify(("web", "purchase"), {})
    assert found == Gated((("retention", "", True),), "purchase")
    assert MODEL.classify(("web", "login"), {}) == Gated((("retention", "purchase", False),), None)
    assert MODEL.classify(("web", "nope"), {}) is None


CUSTOM = """\
[journey]
inactivity_gap = "2h"

[[stage]]
name = "awareness"
timeout = "1.5h"

[[stage]]
name = "purchase"

[[rule]]
stage = "purchase"
channel = "web"
events = ["purchase"]
where = { currency = { in = ["EUR", "USD"] }, revenue = { "<=" = 100 } }

[[rule]]
stage = "awareness"
channel = "web"
events = ["purchase", "page_view"]
where = { flag = true }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stages.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_custom_config_operators(tmp_path: Path) -> None:
    model = load_stage_model(write(tmp_path, CUSTOM))
    assert model.inactivity_gap == timedelta(hours=2) and model.timeouts["purchase"] is None
    assert model.timeouts["awareness"] == timedelta(minutes=90)

    def stage(event_type: str, props: dict[str, Any]) -> str | None:
        return model.stage_of(tp("web", event_type, props), None)

    assert stage("purchase", {"currency": "EUR", "revenue": 100}) == "purchase"
    assert stage("purchase", {"currency": "EUR", "revenue": 100.5}) is None
    assert stage("purchase", {"currency": "GBP", "revenue": 1, "flag": True}) == "awareness"
    assert stage("purchase", {"currency": "EUR", "revenue": "1"}) is None  # not a number
    assert stage("page_view", {"flag": 1}) is None  # 1 is not true
    assert stage("page_view", {}) is None  # a missing property fails


def _model_in_memory() -> StageModel:
    return StageModel(("a",), {"a": None}, timedelta(days=1), {}, {})


def test_model_without_rules_maps_nothing() -> None:
    assert _model_in_memory().stage_of(tp("web", "page_view"), None) is None


BASE = """\
[journey]
inactivity_gap = "30d"

[[stage]]
name = "awareness"
timeout = "7d"

[[stage]]
name = "purchase"
timeout = "30m"
completed_by = ["web/purchase"]

[[stage]]
name = "retention"

[[rule]]
stage = "awareness"
channel = "web"
events = ["page_view"]

[[rule]]
stage = "retention"
channel = "web"
events = ["login"]
after_stage = "purchase"
where = { rating = { ">=" = 4 } }
"""

# (what to replace in BASE, the replacement, a text on the line the error must name,
# a part of the message)
BAD = [
    ('events = ["page_view"]', "events = [page_view]", "events = [page_view]", "Invalid value"),
    ('stage = "retention"', 'stage = "retension"', '"retension"', "unknown stage"),
    ('{ ">=" = 4 }', '{ ">~" = 4 }', '">~"', "unknown operator"),
    (
        'channel = "web"\nevents = ["login"]',
        'channel = "sms"\nevents = ["login"]',
        '"sms"',
        "unknown channel",
    ),
    ('after_stage = "purchase"', 'after_stage = "retention"', "after_stage", "earlier stage"),
    ('timeout = "30m"', 'timeout = "30 minutes"', "30 minutes", "bad duration"),
    ('inactivity_gap = "30d"', 'inactivity_gap = "-1d"', "inactivity_gap", "bad duration"),
    (
        'completed_by = ["web/purchase"]',
        'completed_by = ["shop/purchase"]',
        "shop/purchase",
        "channel/event_type",
    ),
    (
        'after_stage = "purchase"',
        'after_stage = "purchase"\nstag = "x"',
        "stag =",
        "unknown key 'stag'",
    ),
    ('name = "retention"', 'name = "awareness"', 'name = "awareness"', "unique name"),
    ('{ ">=" = 4 }', '{ ">=" = "four" }', "rating", "bad value"),
    ("[journey]", "[journy]", "[journy]", "unknown key 'journy'"),
]


@pytest.mark.parametrize(("old", "new", "marker", "message"), BAD)
def test_bad_config_names_file_and_line(
    tmp_path: Path, old: str, new: str, marker: str, message: str
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    path = write(tmp_path, text)
    line = text[: text.rindex(marker)].count("\n") + 1
    with pytest.raises(ConfigError) as raised:
        load_stage_model(path)
    assert f"{path}, line {line}" in str(raised.value)
    assert message in str(raised.value)


def test_base_config_is_valid(tmp_path: Path) -> None:
    model = load_stage_model(write(tmp_path, BASE))
    assert model.stages == ("awareness", "purchase", "retention")


def test_missing_file_and_missing_stages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_stage_model(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"line 1: at least one \[\[stage\]\]"):
        load_stage_model(write(tmp_path, '[journey]\ninactivity_gap = "1d"\n'))
