"""Journeys: entries, transitions, gaps, late events, order independence, merges, dedup."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from operator import attrgetter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.journey import JourneyStep, advance, merge
from pipeline.journey_build import MAX_JOURNEYS, MAX_PENDING, RECENT_IDS
from pipeline.journey_profile import journey_rows
from pipeline.stage_model import Rule, StageModel, load_stage_model
from schemas.events import Channel
from schemas.journey import JourneyState, StageTransition
from schemas.records import SourceRef, Touchpoint

MODEL = load_stage_model()
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SRC = SourceRef(topic="raw", partition=0, offset=0)
FIXED: dict[str, Any] = {"known_type": True, "identifiers": {}, "schema_version": 1}
KINDS: list[tuple[Channel, str, dict[str, Any]]] = [
    ("web", "page_view", {}), ("web", "ad_click", {}),
    ("email", "email_opened", {"kind": "marketing"}), ("web", "product_view", {}),
    ("chat", "chat_started", {"topic": "presales"}),
    ("web", "add_to_cart", {}), ("web", "checkout_started", {}), ("web", "purchase", {}),
    ("web", "purchase", {}), ("web", "login", {}), ("chat", "chat_started", {"topic": "support"}),
    ("web", "review_submitted", {"rating": 5}), ("call_center", "call_ended", {"nps": 9}),
    ("web", "search", {}),
]  # fmt: skip
DAY = 24 * 60
BY_TYPE = {event_type: (channel, props) for channel, event_type, props in KINDS}


def ev(
    event_type: str, minutes: float, event_id: str, customer: str = "c1", **props: Any
) -> Touchpoint:
    (channel, defaults), at = BY_TYPE[event_type], T0 + timedelta(minutes=minutes)
    return Touchpoint(
        event_id=event_id, occurred_at=at, received_at=at, channel=channel, event_type=event_type,
        properties={**defaults, **props}, customer_id=customer, src=SRC, **FIXED,
    )  # fmt: skip


def run(
    batches: Iterable[Sequence[Touchpoint]],
    state: JourneyState | None = None,
    model: StageModel = MODEL,
) -> tuple[JourneyState, list[StageTransition]]:
    rows: list[StageTransition] = []
    for batch in batches:
        step = advance(state, batch, model)
        state = step.state
        rows.extend(step.transitions)
    assert state is not None
    return state, rows


def final(rows: Iterable[StageTransition]) -> dict[tuple[str, str, str], StageTransition]:
    """What ClickHouse keeps: the highest version per key, without the deleted ones."""
    by_version = sorted(rows, key=attrgetter("version"))
    kept = {(r.customer_id, r.journey_id, r.to_stage): r for r in by_version}
    return {k: r for k, r in kept.items() if not r.is_deleted}


def entries(state: JourneyState) -> list[tuple[datetime, datetime, dict[str, Any]]]:
    return [
        (j.started_at, j.last_seen, {s: (e.entered_at, e.event_id) for s, e in j.entries.items()})
        for j in state.journeys
    ]


def row_set(rows: Iterable[StageTransition]) -> set[tuple[str, datetime, str | None, float | None]]:
    return {(r.to_stage, r.at, r.from_stage, r.seconds_in_previous) for r in rows}


def entry_keys(state: JourneyState) -> set[tuple[str, str, datetime]]:
    """(journey_id, stage, entered_at) of every entry: what the rows kept must show."""
    return {(j.journey_id, s, e.entered_at) for j in state.journeys for s, e in j.entries.items()}


def test_entries_and_transitions_with_time_in_previous() -> None:
    events = [ev("product_view", 10, "b"), ev("page_view", 0, "a"), ev("add_to_cart", 25, "c")]
    step = advance(None, events, MODEL)
    assert step.state is not None and step.state.current_stage == "purchase"
    got = {s: e.event_id for s, e in step.state.entries.items()}
    assert got == {"awareness": "a", "consideration": "b", "purchase": "c"}
    rows = [(t.from_stage, t.to_stage, t.seconds_in_previous, t.version) for t in step.transitions]
    assert sorted(rows, key=lambda g: MODEL.rank[g[1]]) == [
        (None, "awareness", None, 1), ("awareness", "consideration", 600.0, 1),
        ("consideration", "purchase", 900.0, 1),
    ]  # fmt: skip
    jid = step.state.journey_id
    assert {t.journey_id for t in step.transitions} == {jid}
    stamped = [(t.event_id, t.stage, t.journey_id) for t in step.stamped]
    assert stamped == [("a", "awareness", jid), ("b", "consideration", jid), ("c", "purchase", jid)]
    assert step.state.touchpoints == {"web": 3} and step.state.first_seen == T0
    later = advance(step.state, [ev("ad_click", 5, "d")], MODEL)  # awareness already entered
    assert later.transitions == () and later.stamped[0].stage == "awareness"


def test_new_journey_after_the_inactivity_gap() -> None:
    gap = 30 * DAY
    first_batch = [ev("page_view", 0, "a"), ev("product_view", gap, "b")]
    state, rows = run([first_batch, [ev("ad_click", 2 * gap + 1, "c")]])
    assert len(state.journeys) == 2  # 30 days exactly is no gap, one minute more is
    first, second = state.journeys
    assert first.current_stage == "consideration" and second.current_stage == "awareness"
    assert state.journey_id == second.journey_id != first.journey_id
    assert state.journey_started_at == T0 + timedelta(minutes=2 * gap + 1)
    new = [r for r in rows if r.journey_id == second.journey_id]
    assert [(r.from_stage, r.to_stage, r.seconds_in_previous) for r in new] == [
        (None, "awareness", None)
    ]


def test_late_event_moves_an_entry_earlier_and_re_emits_with_higher_version() -> None:
    state, rows = run([[ev("page_view", 10, "a"), ev("product_view", 20, "b")]])
    step = advance(state, [ev("ad_click", 5, "late")], MODEL)
    assert step.state is not None and step.state.journey_id == state.journey_id  # same key
    got = {
        (t.to_stage, t.at, t.event_id, t.seconds_in_previous, t.version) for t in step.transitions
    }
    assert got == {
        ("awareness", T0 + timedelta(minutes=5), "late", None, 2),
        ("consideration", T0 + timedelta(minutes=20), "b", 900.0, 2),  # time in awareness grew
    }
    assert not any(t.is_deleted for t in step.transitions)
    assert step.state.journey_started_at == T0 + timedelta(minutes=5)
    kept = final([*rows, *step.transitions])
    got_kept = {(k[2], r.event_id, r.version) for k, r in kept.items()}
    assert got_kept == {("awareness", "late", 2), ("consideration", "b", 2)}


def test_late_event_bridging_two_journeys_joins_them_and_retracts_the_later() -> None:
    state, rows = run([[ev("page_view", 0, "a")], [ev("product_view", 50 * DAY, "b")]])
    assert len(state.journeys) == 2
    step = advance(state, [ev("ad_click", 25 * DAY, "bridge")], MODEL)
    assert step.state is not None and len(step.state.journeys) == 1
    assert step.state.journey_id == state.journeys[0].journey_id  # the earlier one's id
    first, second = (j.journey_id for j in state.journeys)
    gone = [(t.journey_id, t.to_stage) for t in step.transitions if t.is_deleted]
    assert gone == [(second, "consideration")]
    kept = final([*rows, *step.transitions]).values()
    assert {(r.journey_id, r.to_stage) for r in kept} == {
        (first, "awareness"),
        (first, "consideration"),
    }


def test_gated_stages_login_after_purchase_and_repeat_purchase() -> None:
    state, rows = run([[ev("login", 60, "login")]])
    assert state.entries == {} and rows == []
    step = advance(state, [ev("purchase", 30, "buy")], MODEL)  # late: re-decides the login
    got = {(t.to_stage, t.event_id) for t in step.transitions}
    assert got == {("purchase", "buy"), ("retention", "login")}
    later = [ev("login", 40 * DAY, "l"), ev("purchase", 41 * DAY, "p2")]  # a new journey
    state, _ = run([[ev("purchase", 0, "p1")], later])
    assert [j.current_stage for j in state.journeys] == ["purchase", "retention"]
    assert state.entries["retention"].event_id == "l" and state.purchases == 2


def test_duplicates_are_skipped_and_the_state_decides_the_customer() -> None:
    events = [ev("page_view", 0, "a"), ev("page_view", 0, "a"), ev("purchase", 1, "p")]
    step = advance(None, events, MODEL)
    assert step.duplicates == 1 and len(step.stamped) == 2 and step.state is not None
    again = advance(step.state, [ev("purchase", 1, "p"), ev("page_view", 0, "a")], MODEL)
    assert again == JourneyStep(step.state, (), (), duplicates=2)
    assert again.state is not None and again.state.purchases == 1 and again.state.version == 1
    assert len(again.state.recent_ids) == 2 <= RECENT_IDS
    other = advance(step.state, [ev("page_view", 1, "b", customer="c2")], MODEL)
    assert other.stamped[0].customer_id == "c1"  # e.g. stamped before a merge of customers
    with pytest.raises(ValueError, match="no customer_id"):
        advance(None, [ev("page_view", 1, "b", customer="")], MODEL)


def test_state_round_trips_through_json() -> None:
    events = [ev("login", 60, "l"), ev("page_view", 0, "a"), ev("purchase", 30, "p")]
    state, rows = run([events, [ev("purchase", 90, "p2")]])
    dumped = state.model_dump_json()
    back = JourneyState.model_validate_json(dumped)
    assert back == state
    more = [ev("ad_click", -5, "x"), ev("login", 100, "l2")]
    assert advance(back, more, MODEL).transitions == advance(state, more, MODEL).transitions
    assert state.model_dump_json() == dumped  # advancing never changes the input state
    # records built without validation (trusted) equal validated ones
    built = [rows[0], state.current.entries["purchase"], state.current.pending[0], state]
    built += journey_rows(None, state, MODEL)
    for record in built:
        assert type(record).model_validate(record.model_dump()) == record
    assert rows[0].model_copy(update={"version": 9}).version == 9 and rows[0].version == 1


def test_state_is_bounded_old_journeys_folded_gated_events_capped() -> None:
    views = [[ev("page_view", 40 * DAY * i, f"v{i}")] for i in range(1, 6)]
    state, _ = run([[ev("purchase", 0, "p")], *views])
    assert (len(state.journeys), state.closed_until) == (MAX_JOURNEYS, T0 + timedelta(days=40))
    assert state.passed == {"purchase": T0}  # the folded journey's purchase still counts
    step = advance(state, [ev("login", 1, "late"), ev("login", 200 * DAY + 1, "l")], MODEL)
    stamps = [(t.journey_id, t.stage) for t in step.stamped]
    assert step.too_late == 1 and stamps == [("", "retention"), (state.journey_id, "retention")]
    logins = [ev("login", 10 + i, f"l{i}") for i in range(MAX_PENDING + 8)]
    state, _ = run([[ev("purchase", 0, "p")], logins])
    assert len(state.current.pending) == MAX_PENDING
    assert state.entries["retention"].event_id == "l0" and state.entries["purchase"].event_id == "p"


minutes = st.one_of(st.integers(0, 120), st.integers(0, 90 * DAY))  # one journey, or up to 3
event_sets = st.lists(
    st.tuples(st.integers(0, len(KINDS) - 1), minutes), min_size=1, max_size=24
).map(lambda picks: [ev(KINDS[k][1], m, f"e{i}", **KINDS[k][2]) for i, (k, m) in enumerate(picks)])


# login after *entering* consideration (no completions): the history depends on the entries
BY_ENTRY = StageModel(
    MODEL.stages, MODEL.timeouts, MODEL.inactivity_gap,
    {**MODEL.rules, ("web", "login"): (Rule("retention", after_stage="consideration"),)}, {},
)  # fmt: skip


def split(events: list[Touchpoint], cuts: list[int]) -> list[list[Touchpoint]]:
    points = sorted({c % (len(events) + 1) for c in cuts} | {0, len(events)})
    return [events[a:b] for a, b in pairwise(points) if b > a]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event_sets,
    st.randoms(use_true_random=False),
    st.lists(st.integers(0, 30), max_size=6),
    st.sampled_from([MODEL, BY_ENTRY]),
)
def test_any_arrival_order_gives_the_same_entries_and_rows(
    events: list[Touchpoint], rng: random.Random, cuts: list[int], model: StageModel
) -> None:
    reference, ref_rows = run([sorted(events, key=lambda e: e.occurred_at)], model=model)
    shuffled = events + rng.sample(events, rng.randint(0, len(events)))  # with repeats
    rng.shuffle(shuffled)
    state, rows = run(split(shuffled, cuts), model=model)
    assert entries(state) == entries(reference)
    kept = final(rows)
    assert row_set(kept.values()) == row_set(final(ref_rows).values())
    # the rows kept are exactly the entries of the final state
    assert {(k[1], k[2], r.at) for k, r in kept.items()} == entry_keys(state)
    furthest = [max(j.entries, key=MODEL.rank.__getitem__, default=None) for j in state.journeys]
    assert [j.current_stage for j in state.journeys] == furthest


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event_sets,
    st.randoms(use_true_random=False),
    st.lists(st.integers(0, 30), max_size=6),
    st.lists(st.integers(0, 30), max_size=6),
)
def test_one_arrival_order_in_any_batches_gives_the_same_journey_ids(
    events: list[Touchpoint], rng: random.Random, cuts: list[int], other: list[int]
) -> None:
    """A replay after a crash takes the same messages in other batches: the journeys (and so
    the keys of the rows already written) must not depend on where the batches were cut."""
    rng.shuffle(events)
    one, one_rows = run(split(events, cuts))
    two, two_rows = run(split(events, other))
    assert [j.journey_id for j in one.journeys] == [j.journey_id for j in two.journeys]
    assert final(one_rows).keys() == final(two_rows).keys()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_sets, st.lists(st.booleans(), min_size=24, max_size=24))
def test_merge_is_commutative_and_equals_one_customer(
    events: list[Touchpoint], sides: list[bool]
) -> None:
    pairs = zip(events, sides, strict=False)
    owned = [e.model_copy(update={"customer_id": "a" if s else "b"}) for e, s in pairs]
    mine = [e for e in owned if e.customer_id == "a"]
    theirs = [e for e in owned if e.customer_id == "b"]
    if not mine or not theirs:
        return
    a, a_rows = run([mine])
    b, b_rows = run([theirs])
    ab, ba = merge(a, b, "a", MODEL), merge(b, a, "a", MODEL)
    assert ab == ba
    one, _ = run([[e.model_copy(update={"customer_id": "a"}) for e in events[: len(sides)]]])
    assert entries(ab.state) == entries(one) and ab.state.customer_id == "a"
    assert ab.state.version == max(a.version, b.version) + 1
    assert {(t.customer_id, t.is_deleted) for t in ab.transitions} <= {("a", False)}
    kept = final([*a_rows, *b_rows, *ab.transitions, *ab.retractions])
    assert {k[0] for k in kept} <= {"a"}  # nothing of b is left
    assert {(k[1], k[2], r.at) for k, r in kept.items()} == entry_keys(ab.state)


def test_merge_keeps_counters_and_survivor_segment() -> None:
    a, _ = run([[ev("page_view", 0, "x", customer="a")]])
    b, _ = run([[ev("purchase", 5, "y", customer="b")]])
    b = b.model_copy(update={"segment": "bargain"})
    step = merge(a, b, "a", MODEL)
    assert step.state.segment == "bargain" and step.state.purchases == 1
    assert step.state.touchpoints == {"web": 2} and len(step.state.journeys) == 1
    assert {t.to_stage for t in step.transitions} == {"awareness", "purchase"}
    assert {(t.customer_id, t.to_stage) for t in step.retractions} == {("b", "purchase")}


def test_an_event_both_states_counted_is_counted_once_by_the_merge() -> None:
    """A replay after a crash can place an event under a customer's fallback id as well as
    under the customer it is then merged into: the merge counts it once, either way round."""
    shared = ev("purchase", 5, "y", customer="a")
    a, _ = run([[ev("page_view", 0, "x", customer="a"), shared]])
    b, _ = run(
        [[shared.model_copy(update={"customer_id": "b"}), ev("login", 9, "z", customer="b")]]
    )
    one, _ = run([[ev("page_view", 0, "x"), ev("purchase", 5, "y"), ev("login", 9, "z")]])
    for step in (merge(a, b, "a", MODEL), merge(b, a, "a", MODEL)):
        assert step.state.touchpoints == one.touchpoints == {"web": 3}
        assert step.state.purchases == one.purchases == 1
        assert [r[1] for r in step.state.recent_ids] == ["x", "y", "z"]
    assert merge(a, b, "a", MODEL) == merge(b, a, "a", MODEL)


def test_states_of_an_older_version_still_load_and_merge() -> None:
    """Recent ids written before ``counted`` existed are (at, event_id) pairs: they load and
    advance, and a merge with them still counts a shared event once when the other state
    says what it was counted in."""
    a, _ = run([[ev("page_view", 0, "x", customer="a")]])
    old = a.model_dump(mode="json")
    old["recent_ids"] = [r[:2] for r in old["recent_ids"]]
    legacy = JourneyState.model_validate(old)
    assert legacy.recent_ids == ((T0, "x"),)
    b, _ = run([[ev("page_view", 0, "x", customer="b")]])
    assert merge(legacy, b, "a", MODEL).state.touchpoints == {"web": 1}
    later, _ = run([[ev("login", 3, "w", customer="a")]], state=legacy)
    assert [r[1] for r in later.recent_ids] == ["x", "w"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_sets, st.lists(st.sampled_from("ab+"), min_size=24, max_size=24))
def test_states_that_share_events_merge_into_one_customer(
    events: list[Touchpoint], sides: list[str]
) -> None:
    """Each event goes to state a, to b, or to both (+: replayed under two customer ids);
    the merge equals one customer that saw every event once, in its counts too."""
    pairs = list(zip(events, sides, strict=False))
    mine = [e.model_copy(update={"customer_id": "a"}) for e, s in pairs if s in "a+"]
    theirs = [e.model_copy(update={"customer_id": "b"}) for e, s in pairs if s in "b+"]
    if not mine or not theirs:
        return
    a, _ = run([mine])
    b, _ = run([theirs])
    one, _ = run([[e.model_copy(update={"customer_id": "a"}) for e, _ in pairs]])
    step = merge(a, b, "a", MODEL)
    assert step == merge(b, a, "a", MODEL)
    assert step.state.touchpoints == one.touchpoints and step.state.purchases == one.purchases
    assert entries(step.state) == entries(one)
    assert sorted(r[1] for r in step.state.recent_ids) == sorted(r[1] for r in one.recent_ids)
