"""The journey simulator: determinism, contract validity, injected faults, incidents,
adversarial identity ground truth and the ground-truth file."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import phonenumbers
import pytest
from pydantic import ValidationError

from pipeline.producers.adversarial import (
    ADVERSARIAL_TAGS,
    FORWARDED,
    HOUSEHOLD,
    MALFORMED_REASONS,
    PLACEHOLDER_VALUES,
    SHARED_DEVICE,
    SWITCHBOARD,
    TYPO,
    load_ground_truth,
    pipeline_node,
)
from pipeline.producers.personas import DROP_OFF_CAUSES, SEGMENTS, STAGES
from pipeline.producers.simulator import (
    Incident,
    SimEvent,
    Simulation,
    SimulationConfig,
    customer_count,
    simulate,
)
from pipeline.settings import DEFAULT_PLACEHOLDERS
from pipeline.validate import ValidationConfig, validate_message
from schemas.events import IDENTIFIER_TYPES
from schemas.records import DeadLetter, SourceRef, Touchpoint

START = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
PLACEHOLDERS = frozenset(p.lower() for p in DEFAULT_PLACEHOLDERS)
VALIDATION = ValidationConfig(hash_key=b"k", placeholders=PLACEHOLDERS)
SRC = SourceRef(topic="touchpoints.raw", partition=0, offset=0)

BRIEF_KINDS = {
    "not_json": "not_json",
    "invalid_utf8": "invalid_utf8",
    "oversized": "too_large",
    "missing_field": "missing_field",
    "wrong_type": "wrong_type",
    "placeholder_only": "placeholder_identifier",
    "naive_timestamp": "invalid_value",
    "unknown_channel": "invalid_value",
}
"""The malformed kinds the brief names and the dead-letter reason each must get."""


def config(**overrides: Any) -> SimulationConfig:
    base: dict[str, Any] = {"seed": 42, "start": START, "customers": 600}
    return SimulationConfig(**{**base, **overrides})


def validate(event: SimEvent, cfg: SimulationConfig) -> Touchpoint | DeadLetter:
    now = cfg.start + cfg.duration + timedelta(hours=1)
    return validate_message(event.payload, SRC, now, VALIDATION)


@cache
def adversarial_run() -> tuple[list[SimEvent], Simulation]:
    """One adversarial run shared by the identity tests (it is pure, so sharing is safe)."""
    sim = Simulation(config(seed=7, customers=2500, adversarial=True))
    return list(sim.events()), sim


def body(event: SimEvent) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(event.payload)
    return data


def valid(events: Iterable[SimEvent]) -> list[SimEvent]:
    return [e for e in events if e.malformed is None and not e.duplicate]


def who(event: SimEvent) -> int:
    assert event.truth_customer is not None
    return event.truth_customer


# --- determinism and streaming ---------------------------------------------------------------
def test_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    def run(seed: int) -> list[tuple[bytes, bytes | None, datetime]]:
        cfg = config(seed=seed, customers=300, adversarial=True, malformed_fraction=0.05)
        return [(e.payload, e.key, e.delivered_at) for e in simulate(cfg)]

    first = run(1)
    assert len(first) > 1000
    assert run(1) == first
    assert run(2) != first


def test_it_streams_without_building_the_run() -> None:
    huge = config(customers=5_000_000, duration=timedelta(days=30))
    first = list(itertools.islice(simulate(huge), 2000))
    assert len(first) == 2000


def test_event_budget_stops_generation() -> None:
    sim = Simulation(config(customers=5000, max_events=3000, duplicate_fraction=0.0))
    events = list(sim.events())
    assert sim.summary.events == 3000
    assert len(events) == 3000


def test_summary_counts_what_was_emitted() -> None:
    sim = Simulation(config(customers=800, malformed_fraction=0.02, duplicate_fraction=0.02))
    events = list(sim.events())
    s = sim.summary
    assert s.messages == len(events)
    assert s.duplicates == sum(e.duplicate for e in events)
    originals = [e for e in events if not e.duplicate]
    assert sum(s.malformed.values()) == sum(e.malformed is not None for e in originals)
    assert s.by_channel == Counter(e.channel for e in originals)
    assert s.by_type == Counter(f"{e.channel}/{e.event_type}" for e in originals)
    assert set(s.by_channel) == {"web", "chat", "email", "call_center"}
    assert s.late > 0 and s.out_of_order > 0
    assert set(s.as_dict()) >= {"events", "by_channel", "by_type", "malformed", "duplicates"}


# --- the contract ----------------------------------------------------------------------------
def test_every_valid_event_passes_validation() -> None:
    events, _ = adversarial_run()
    cfg = config(seed=7, customers=2500, adversarial=True)
    checked = 0
    for event in valid(events):
        result = validate(event, cfg)
        assert isinstance(result, Touchpoint), (event.payload[:300], result)
        assert result.event_id == event.event_id
        assert result.channel == event.channel and result.event_type == event.event_type
        assert result.known_type
        assert 1 <= len(result.identifiers) <= 3
        checked += 1
    assert checked > 20_000


def test_key_is_the_strongest_real_identifier() -> None:
    events, _ = adversarial_run()
    for event in valid(events)[:5000]:
        ids = body(event)["identifiers"]
        real = [ids[k] for k in IDENTIFIER_TYPES if k in ids and ids[k] not in PLACEHOLDER_VALUES]
        assert event.key == real[0].encode()


def test_identifier_combinations_are_realistic() -> None:
    events, _ = adversarial_run()
    combos: dict[str, Counter[frozenset[str]]] = defaultdict(Counter)
    for event in valid(events):
        ids = {k for k, v in body(event)["identifiers"].items() if v not in PLACEHOLDER_VALUES}
        combos[event.channel][frozenset(ids)] += 1
    assert frozenset({"anonymous_id"}) in combos["web"]
    assert frozenset({"anonymous_id", "user_id"}) in combos["web"]
    assert set().union(*combos["email"]) == {"email", "crm_id"}
    assert set().union(*combos["call_center"]) == {"phone", "crm_id"}
    assert set().union(*combos["chat"]) == {"chat_visitor_id", "email"}
    assert all("phone" in c for c in combos["call_center"])
    assert all("chat_visitor_id" in c for c in combos["chat"])


def test_phones_are_valid_us_numbers() -> None:
    events, _ = adversarial_run()
    phones = {body(e)["identifiers"]["phone"] for e in valid(events) if e.channel == "call_center"}
    phones -= set(PLACEHOLDER_VALUES)
    assert len(phones) > 100
    for phone in phones:
        assert phonenumbers.is_valid_number(phonenumbers.parse(phone, "US")), phone


def test_catalogue_per_stage() -> None:
    events, sim = adversarial_run()
    paths = {c: [s for s, _ in t.stages] for c, t in sim.truth.customers.items()}
    for event in valid(events):
        props = body(event)["properties"]
        if event.event_type == "review_submitted":
            assert props["rating"] >= 4
            assert paths[who(event)][-1] == "advocacy"
        if event.event_type == "call_ended" and "nps" in props and props["nps"] >= 9:
            assert paths[who(event)][-1] == "advocacy"
        if event.event_type in ("call_started", "chat_started"):
            assert props["wait_seconds"] >= 0
    types = Counter(e.event_type for e in valid(events))
    for kind in ("ad_click", "page_view", "product_view", "pricing_view", "email_clicked",
                 "chat_started", "call_started", "call_ended", "add_to_cart",
                 "checkout_started", "purchase", "login", "review_submitted", "referral_sent"):  # fmt: skip
        assert types[kind] > 0, kind


def test_segments_prefer_their_channels() -> None:
    events, sim = adversarial_run()
    per_segment: dict[str, Counter[str]] = defaultdict(Counter)
    for event in valid(events):
        per_segment[sim.truth.customers[who(event)].segment][event.channel] += 1
    assert set(per_segment) == set(SEGMENTS)

    def share(segment: str, channel: str) -> float:
        return per_segment[segment][channel] / sum(per_segment[segment].values())

    assert share("senior", "call_center") > 2 * share("young_digital", "call_center")
    assert share("young_digital", "chat") > 2 * share("senior", "chat")


# --- delivery faults -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(MALFORMED_REASONS))
def test_each_malformed_kind_dead_letters_with_its_reason(kind: str) -> None:
    cfg = config(customers=150, malformed_fraction=0.3, malformed_kinds=(kind,))
    broken = [e for e in simulate(cfg) if e.malformed is not None]
    assert len(broken) > 50
    for event in broken:
        assert event.malformed_kind == kind
        assert event.malformed == MALFORMED_REASONS[kind]
        result = validate(event, cfg)
        assert isinstance(result, DeadLetter), event.payload[:200]
        assert result.reason == event.malformed
        assert result.event_id == (event.event_id or "")
    if kind == "oversized":
        assert all(len(e.payload) > 1_000_000 for e in broken)


def test_the_briefs_kinds_map_to_these_reasons() -> None:
    assert {k: MALFORMED_REASONS[k] for k in BRIEF_KINDS} == BRIEF_KINDS  # type: ignore[index]


def test_duplicates_repeat_the_same_bytes_later() -> None:
    events = list(simulate(config(duplicate_fraction=0.05)))
    first: dict[str | None, SimEvent] = {}
    dupes = 0
    for event in events:
        if not event.duplicate:
            first[event.event_id] = event
            continue
        dupes += 1
        original = first[event.event_id]
        assert original.payload == event.payload
        assert original.key == event.key
        assert event.delivered_at >= original.delivered_at
    assert dupes > 100


def test_late_and_out_of_order_events_are_displaced_in_delivery_order() -> None:
    cfg = config(late_fraction=0.02, out_of_order_fraction=0.1, duplicate_fraction=0.0)
    events = list(simulate(cfg))
    delivered = [e.delivered_at for e in events]
    assert delivered == sorted(delivered)
    delays = [e.delay_seconds for e in events]
    late = sum(d >= 120 for d in delays)
    out_of_order = sum(0 < d < 120 for d in delays)
    assert late / len(events) == pytest.approx(0.02, abs=0.01)
    assert out_of_order / len(events) == pytest.approx(0.1, abs=0.02)
    overtaken = sum(
        1 for a, b in itertools.pairwise(events) if b.occurred_at < a.occurred_at
    )  # fmt: skip
    assert overtaken > 0.05 * len(events)
    assert all(START <= e.occurred_at < START + cfg.duration for e in events)


# --- journeys and incidents ------------------------------------------------------------------
def abandonment(events: Iterable[SimEvent], lo: float, hi: float) -> tuple[int, float]:
    """Share of first checkouts started in [lo, hi) minutes with no purchase after them."""
    checkout: dict[int, float] = {}
    bought: set[int] = set()
    for event in events:
        assert event.truth_customer is not None
        if event.event_type == "checkout_started":
            minute = (event.occurred_at - START).total_seconds() / 60
            checkout.setdefault(event.truth_customer, minute)
        elif event.event_type == "purchase":
            bought.add(event.truth_customer)
    window = [c for c, minute in checkout.items() if lo <= minute < hi]
    return len(window), sum(c not in bought for c in window) / max(1, len(window))


def test_an_incident_doubles_checkout_abandonment_in_its_window() -> None:
    incident = Incident(stage="purchase", start_minute=60, end_minute=80, dropoff_multiplier=2.0)
    cfg = config(
        customers=6000, duration=timedelta(hours=3), incidents=(incident,),
        malformed_fraction=0.0, duplicate_fraction=0.0,
    )  # fmt: skip
    events = list(simulate(cfg))
    # the drop-off is decided at the payment, 20 s to 3 min after the checkout starts
    n_in, inside = abandonment(events, 60, 77)
    n_before, before = abandonment(events, 20, 57)
    n_after, after = abandonment(events, 80, 150)
    assert min(n_in, n_before, n_after) > 100
    assert inside > 1.6 * before and inside > 1.6 * after
    assert 0.2 < before < 0.45 and 0.2 < after < 0.45


def test_several_incidents_and_their_validation() -> None:
    incidents = (
        Incident(stage="purchase", start_minute=10, end_minute=20),
        Incident(stage="consideration", start_minute=30, end_minute=50, dropoff_multiplier=1.5),
    )
    assert config(incidents=incidents).incidents == incidents
    with pytest.raises(ValidationError):
        Incident(stage="purchase", start_minute=20, end_minute=10)
    with pytest.raises(ValidationError):
        Incident(stage="checkout", start_minute=1, end_minute=2)


CAUSE_STAGES = {
    "long_phone_hold": "consideration",
    "unresolved_chat": "consideration",
    "email_bounced": "awareness",
}
"""Each built-in cause checked, and the stage where it is checked."""


@cache
def plain_run() -> tuple[list[SimEvent], Simulation]:
    sim = Simulation(config(seed=3, customers=6000, duration=timedelta(hours=4)))
    return list(sim.events()), sim


@pytest.mark.parametrize("cause", sorted(CAUSE_STAGES))
def test_drop_off_causes_raise_drop_off(cause: str) -> None:
    """What a pain-point ranking must find: customers whose stage showed the cause drop off
    at that stage far more often than those whose stage did not."""
    stage, check = CAUSE_STAGES[cause], DROP_OFF_CAUSES[cause]
    events, sim = plain_run()
    kinds = {event_type for _, event_type in check.events}
    shown = [
        (e.truth_customer, (e.occurred_at - START).total_seconds())
        for e in valid(events)
        if e.event_type in kinds and check.matches(e.channel, e.event_type, body(e)["properties"])
    ]
    pained = set()
    for person, t in shown:
        assert person is not None
        stages = sim.truth.customers[person].stages
        if max((s for s in stages if s[1] <= t), key=lambda s: s[1])[0] == stage:
            pained.add(person)
    rates = {}
    for flagged in (True, False):
        group = [
            t for person, t in sim.truth.customers.items()
            if (person in pained) == flagged and stage in dict(t.stages) and t.outcome != "censored"
        ]  # fmt: skip
        dropped = sum(t.outcome == "dropped" and t.stages[-1][0] == stage for t in group)
        rates[flagged] = dropped / len(group)
        assert len(group) > 30
    assert rates[True] > 1.4 * rates[False], rates


def test_drop_off_causes_are_exposed_strongest_first() -> None:
    assert list(DROP_OFF_CAUSES) == [
        "long_phone_hold", "unresolved_chat", "email_bounced", "low_csat"
    ]  # fmt: skip
    multipliers = [c.multiplier for c in DROP_OFF_CAUSES.values()]
    assert multipliers == sorted(multipliers, reverse=True) and min(multipliers) > 1
    hold = DROP_OFF_CAUSES["long_phone_hold"]
    assert hold.condition == "wait_seconds > 300.0"
    assert hold.matches("call_center", "call_started", {"wait_seconds": 301})
    assert not hold.matches("call_center", "call_started", {"wait_seconds": 299})
    assert not hold.matches("chat", "chat_started", {"wait_seconds": 999})
    assert DROP_OFF_CAUSES["unresolved_chat"].matches("chat", "chat_ended", {"resolved": False})
    assert DROP_OFF_CAUSES["low_csat"].matches("call_center", "call_ended", {"csat": 2})
    assert DROP_OFF_CAUSES["email_bounced"].matches("email", "email_bounced", {})


def test_stage_paths_follow_the_funnel() -> None:
    sim = Simulation(config(customers=1500))
    for _ in sim.events():
        pass
    reached: Counter[str] = Counter()
    for truth in sim.truth.customers.values():
        path = [s for s, _ in truth.stages]
        assert path == list(STAGES[: len(path)])
        assert [t for _, t in truth.stages] == sorted(t for _, t in truth.stages)
        reached.update(path)
        if truth.outcome == "completed":
            assert path[-1] == "advocacy"
    counts = [reached[s] for s in STAGES]
    assert counts == sorted(counts, reverse=True) and counts[-1] > 0


def test_rate_sets_the_number_of_customers() -> None:
    cfg = config(events_per_second=2.0, duration=timedelta(hours=3))
    customers = customer_count(cfg)
    assert 1000 < customers < 3000
    sim = Simulation(cfg, track_truth=False)
    for _ in sim.events():
        pass
    rate = sim.summary.events / cfg.duration.total_seconds()
    assert rate == pytest.approx(2.0, rel=0.3)


def test_start_must_be_timezone_aware() -> None:
    with pytest.raises(ValidationError):
        SimulationConfig(start=datetime(2024, 5, 1))
    local = datetime(2024, 5, 1, 10, tzinfo=UTC).astimezone()
    assert config(start=local).start.tzinfo == UTC


# --- adversarial identities and ground truth ---------------------------------------------------
def callers(events: Iterable[SimEvent], tag: str) -> dict[str, set[int]]:
    """Normalised phone -> distinct true customers calling from it, for events with ``tag``."""
    seen: dict[str, set[int]] = defaultdict(set)
    for event in events:
        if event.tag == tag and event.truth_customer is not None:
            raw = body(event)["identifiers"]["phone"]
            number = phonenumbers.parse(raw, "US")
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            seen[e164].add(event.truth_customer)
    return seen


def test_switchboards_and_households_share_phones() -> None:
    events, sim = adversarial_run()
    boards = callers(valid(events), SWITCHBOARD)
    assert boards and max(len(people) for people in boards.values()) > 10
    homes = callers(valid(events), HOUSEHOLD)
    assert any(len(people) >= 2 for people in homes.values())
    for phone in boards:
        assert sim.truth.owners[phone] >= boards[phone]


def test_shared_devices_carry_two_user_ids() -> None:
    events, sim = adversarial_run()
    users: dict[str, set[str]] = defaultdict(set)
    for event in valid(events):
        ids = body(event)["identifiers"]
        if event.tag == SHARED_DEVICE and "user_id" in ids:
            users[ids["anonymous_id"]].add(ids["user_id"])
    assert any(len(u) >= 2 for u in users.values())
    for cookie in users:
        assert sim.truth.flags[cookie] == SHARED_DEVICE


def test_forwarded_clicks_belong_to_someone_else() -> None:
    events, sim = adversarial_run()
    forwarded = [e for e in valid(events) if e.tag == FORWARDED]
    assert forwarded
    for event in forwarded:
        email = body(event)["identifiers"]["email"]
        assert sim.truth.owner_of(email) != event.truth_customer


def test_typo_emails_are_never_linked() -> None:
    events, _ = adversarial_run()
    typos = [e for e in valid(events) if e.tag == TYPO]
    assert typos
    for event in typos:
        ids = body(event)["identifiers"]
        assert [k for k, v in ids.items() if v not in PLACEHOLDER_VALUES] == ["email"]
    assert all(e.event_type.startswith("email_") for e in typos)


def test_recycled_phones_have_two_owners_in_turn() -> None:
    _, sim = adversarial_run()
    recycled = [v for v, kind in sim.truth.flags.items() if kind == "recycled_phone"]
    multi = [v for v in recycled if v in sim.truth.owners]
    assert multi
    for phone in multi:
        first, *later = sorted(sim.truth.owners[phone])
        truth = sim.truth.customers
        ends = truth[first].ended_at
        assert ends is not None and all(truth[w].arrived >= ends for w in later)


def test_placeholder_values_are_the_pipelines_placeholders() -> None:
    assert {v.lower() for v in PLACEHOLDER_VALUES} <= PLACEHOLDERS


def test_placeholders_and_late_links_appear() -> None:
    events, _ = adversarial_run()
    tags = Counter(e.tag for e in valid(events))
    assert tags["placeholder_id"] > 0 and tags["late_link"] > 0
    assert set(ADVERSARIAL_TAGS) <= set(tags)
    late_links = [e for e in events if e.tag == "late_link" and not e.duplicate]
    assert all(e.delay_seconds >= 120 for e in late_links)


def test_best_achievable_components_are_pure() -> None:
    _, sim = adversarial_run()
    held = sim.truth.holdings()
    components = sim.truth.components()
    assert len(components) > 2500
    everywhere: set[str] = set()
    for owner, members in components:
        assert set(members) <= set(held[owner])
        assert not everywhere & set(members)
        everywhere |= set(members)
    misleading = {f"{sim.truth.types[v]}:{v}" for v in sim.truth.owners}
    assert misleading and not misleading & everywhere


def test_plain_runs_have_no_adversarial_cases() -> None:
    sim = Simulation(config(customers=800))
    tags = {e.tag for e in sim.events()}
    assert not tags & set(ADVERSARIAL_TAGS)
    assert not sim.truth.owners


def test_ground_truth_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    cfg = config(customers=500, adversarial=True, malformed_fraction=0.02)
    events = list(simulate(cfg, truth_path=path))
    truth = load_ground_truth(path)
    expected = {e.event_id: e.truth_customer for e in events if not e.duplicate and e.event_id}
    assert truth.events == expected
    assert truth.malformed == {
        e.event_id: e.malformed for e in events if e.malformed and e.event_id and not e.duplicate
    }
    assert truth.header["seed"] == cfg.seed and truth.header["adversarial"] is True
    assert len(truth.customers) == 500
    again = Simulation(cfg)
    for _ in again.events():
        pass
    assert sorted((w, sorted(ids)) for w, ids in truth.components) == again.truth.components()
    assert {m.id for m in truth.misleading.values()} == {
        f"{again.truth.types[v]}:{v}" for v in again.truth.owners
    }
    one = next(c for c in truth.customers.values() if len(c.stages) > 2)
    assert one.stages[0][0] == "awareness" and one.arrived <= one.stages[0][1]
    assert truth.summary["events"] == again.summary.events


def test_ground_truth_is_complete_when_the_consumer_stops_early(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    stream = simulate(config(customers=2000, duplicate_fraction=0.0), truth_path=path)
    taken = list(itertools.islice(stream, 500))
    stream.close()
    truth = load_ground_truth(path)
    assert set(truth.events) == {e.event_id for e in taken if e.event_id}
    assert truth.customers and truth.components and truth.summary


def test_truth_identifiers_map_to_the_pipelines_nodes() -> None:
    events, _ = adversarial_run()
    event = next(e for e in valid(events) if "email" in body(e)["identifiers"])
    touchpoint = validate(event, config())
    assert isinstance(touchpoint, Touchpoint)
    email = body(event)["identifiers"]["email"].lower()
    assert pipeline_node(f"email:{email}", b"k") == f"email:{touchpoint.identifiers['email']}"
    assert pipeline_node("user_id:u_1", b"k") == "user_id:u_1"
    assert pipeline_node(f"email:{email}", None) == f"email:{email}"


def test_ground_truth_loader_refuses_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.jsonl"
    path.write_bytes(b'{"kind": "header", "version": 99}\n')
    with pytest.raises(ValueError, match="ground-truth"):
        load_ground_truth(path)
