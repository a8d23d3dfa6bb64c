"""The shared-line rule: a phone on two calls at once stands for no one person."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipeline.assignment_map import AssignmentMap
from pipeline.identity_graph import GuardrailConfig, IdentityGraph, resolve
from pipeline.stamp import stamp
from schemas.identity import (
    IdentityLink,
    LinkBatch,
    NodeAssignment,
    ResolverOutput,
    event_customer_id,
    fallback_customer_id,
)
from schemas.records import SourceRef, Touchpoint

T0 = datetime(2026, 3, 1, 9, tzinfo=UTC)
BOARD = "phone:board"


def call(event_id: str, minute: float, call_id: str, *nodes: str) -> IdentityLink:
    at = T0 + timedelta(minutes=minute)
    return IdentityLink(event_id=event_id, occurred_at=at, nodes=(BOARD, *nodes), call=call_id)


def run(graph: IdentityGraph, *links: IdentityLink, cfg: GuardrailConfig | None = None) -> ResolverOutput:
    return resolve(graph, LinkBatch(links=links), cfg)


def overlapping() -> tuple[IdentityLink, ...]:
    """Call A from 0 to 10 minutes, call B starting at 5 on the same phone."""
    return call("a1", 0, "A"), call("a2", 10, "A"), call("b1", 5, "B")


def test_two_calls_at_once_make_a_shared_line() -> None:
    graph = IdentityGraph()
    out = run(graph, *overlapping())
    assert graph.is_shared(BOARD)
    (refusal,) = out.refusals
    assert (refusal.event_id, refusal.node, refusal.reason) == ("b1", BOARD, "shared_line")
    assert "A 09:00:00-09:10:00" in refusal.detail and "B 09:05:00-09:05:00" in refusal.detail
    (announced,) = out.assignments
    assert announced == NodeAssignment(
        node=BOARD, customer_id=fallback_customer_id(BOARD), version=announced.version, shared=True
    )


def test_the_overlap_is_found_whatever_the_arrival_order() -> None:
    for order in ((2, 1, 0), (1, 2, 0), (0, 2, 1)):
        graph = IdentityGraph()
        links = overlapping()
        run(graph, *(links[i] for i in order))
        assert graph.is_shared(BOARD), order


def test_calls_one_after_the_other_are_one_persons_line() -> None:
    graph = IdentityGraph()
    out = run(graph, call("a1", 0, "A"), call("a2", 10, "A"), call("b1", 11, "B"), call("b2", 20, "B"))
    assert not graph.is_shared(BOARD) and out.refusals == ()


def test_a_shared_line_links_nothing_new() -> None:
    graph = IdentityGraph()
    run(graph, call("x", 0, "X", "email:ann"))  # Ann's call: the line joins Ann
    run(graph, *overlapping())
    out = run(graph, call("c1", 30, "C", "email:bob"))
    assert graph.customer_of("email:bob") != graph.customer_of("email:ann")
    assert [(r.node, r.reason, r.customer_id) for r in out.refusals] == [
        (BOARD, "shared_line", fallback_customer_id("email:bob"))
    ]


def test_a_replay_changes_nothing_and_the_changelog_keeps_the_rule() -> None:
    graph = IdentityGraph()
    run(graph, *overlapping())
    delta = graph.dirty_entries()
    assert delta.shared == (BOARD,) and set(delta.calls[BOARD]) == {"A", "B"}
    assert run(graph, *overlapping()) == ResolverOutput()
    restored = IdentityGraph.restore([delta])
    assert restored.is_shared(BOARD) and restored.calls_of(BOARD) == graph.calls_of(BOARD)
    out = run(restored, call("c1", 30, "C", "email:bob"))
    assert [r.reason for r in out.refusals] == ["shared_line"]


def test_off_with_the_other_guardrails() -> None:
    graph = IdentityGraph()
    assert run(graph, *overlapping(), cfg=GuardrailConfig.off()) == ResolverOutput()
    assert not graph.is_shared(BOARD)


def test_only_the_newest_calls_are_kept() -> None:
    graph = IdentityGraph()
    run(graph, *(call(f"e{i}", 10 * i, f"C{i}") for i in range(20)))
    assert len(graph.calls_of(BOARD)) == 8 and "C19" in graph.calls_of(BOARD)


def _tp(event_id: str, identifiers: dict[str, str], call_id: str | None = None) -> Touchpoint:
    return Touchpoint(
        event_id=event_id, occurred_at=T0, received_at=T0, channel="call_center",
        event_type="call_started", known_type=True, identifiers=identifiers,
        properties={"call_id": call_id} if call_id else {}, schema_version=1,
        src=SourceRef(topic="raw", partition=0, offset=0),
    )  # fmt: skip


def test_stamping_passes_a_shared_line_over() -> None:
    amap = AssignmentMap()
    amap.apply(NodeAssignment(node=BOARD, customer_id="c_ann", version=3, shared=True))
    lone = _tp("lone", {"phone": "board"}, "K1")
    with_cookie = _tp("both", {"phone": "board", "anonymous_id": "k"})
    result = stamp([lone, with_cookie], amap, 1)
    stamped = {tp.event_id: tp.customer_id for tp in result.by_partition[0]}
    assert stamped == {"lone": event_customer_id("lone"), "both": fallback_customer_id("anonymous_id:k")}
    assert [link.call for link in result.links] == ["K1", ""]
    amap.apply(NodeAssignment(node=BOARD, customer_id="c_ann", version=2))  # older: ignored
    assert amap.shared == {BOARD}
    amap.apply(NodeAssignment(node=BOARD, customer_id="c_bob", version=4))
    assert amap.shared == set() and amap.customer_of(BOARD) == "c_bob"


def test_placeholder_and_forgotten_phones_keep_no_call_state() -> None:
    from pipeline.identity_graph import forget

    cfg = GuardrailConfig(placeholders=frozenset({"board"}))
    graph = IdentityGraph()
    out = run(graph, *overlapping(), cfg=cfg)
    assert not graph.is_shared(BOARD) and graph.calls_of(BOARD) == {}
    assert {r.reason for r in out.refusals} == {"placeholder"}
    graph = IdentityGraph()
    run(graph, call("a0", 0, "A", "email:ann"))
    forget(graph, BOARD)
    graph.dirty_entries()
    run(graph, *overlapping())  # a replay from before the forget
    assert graph.calls_of(BOARD) == {} and not graph.is_shared(BOARD)
    assert BOARD not in graph.dirty_entries().model_dump_json()


def test_a_call_older_than_every_call_kept_is_not_taken_back() -> None:
    graph = IdentityGraph()
    run(graph, call("a1", 0, "A"), call("a2", 10, "A"), call("b1", 60, "B"))
    run(graph, *(call(f"n{i}", 100 + 10 * i, f"N{i}") for i in range(7)))  # A evicted
    run(graph, call("b0", 5, "B"))  # B now spans 5-60; A is gone
    assert not graph.is_shared(BOARD)
    assert run(graph, call("a2", 10, "A")) == ResolverOutput()  # a replay of A's end
    assert not graph.is_shared(BOARD) and "A" not in graph.calls_of(BOARD)


def test_the_revealing_link_is_refused_once() -> None:
    graph = IdentityGraph()
    run(graph, call("a1", 0, "A"), call("a2", 10, "A"))
    out = run(graph, call("b1", 5, "B", "email:bob"))
    assert [(r.node, r.reason) for r in out.refusals] == [(BOARD, "shared_line")]
    assert graph.customer_of("email:bob") != graph.customer_of(BOARD)


def test_turning_the_rule_off_lets_a_shared_line_link_again() -> None:
    graph = IdentityGraph()
    run(graph, *overlapping())
    out = run(graph, call("c1", 30, "C", "email:bob"), cfg=GuardrailConfig.off())
    assert out.refusals == () and graph.customer_of("email:bob") == graph.customer_of(BOARD)
