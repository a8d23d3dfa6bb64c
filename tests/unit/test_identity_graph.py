"""The identity graph as pure code: stitching, guardrails, outputs, forget, persistence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.errors import ConfigError
from pipeline.identity_graph import GuardrailConfig, IdentityGraph, forget, resolve
from schemas.identity import (
    GraphDelta,
    IdentityLink,
    LinkBatch,
    ResolverOutput,
    fallback_customer_id,
    link_from_identifiers,
    node_of,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
_ids = iter(range(10**9))


def link(*nodes: str, hours: float = 0) -> IdentityLink:
    return IdentityLink(
        event_id=f"e{next(_ids)}", occurred_at=T0 + timedelta(hours=hours), nodes=nodes
    )


def run(
    graph: IdentityGraph, *links: IdentityLink, cfg: GuardrailConfig | None = None
) -> ResolverOutput:
    return resolve(graph, LinkBatch(links=links), cfg)


def same(graph: IdentityGraph, *nodes: str) -> bool:
    return len({graph.customer_of(n) for n in nodes}) == 1


# --- records and ids ---------------------------------------------------------------------------


def test_nodes_links_and_fallback_ids() -> None:
    assert node_of("email", "h1") == "email:h1"
    with pytest.raises(ValueError):
        node_of("fax", "1")
    made = link_from_identifiers("e", T0, {"anonymous_id": "a", "crm_id": "k", "email": "h"})
    assert made.nodes == ("crm_id:k", "email:h", "anonymous_id:a")
    assert link("phone:1", "user_id:u", "phone:1").nodes == ("user_id:u", "phone:1")
    with pytest.raises(ValueError):
        link("nokind")
    fb = fallback_customer_id("email:h")
    assert fb == fallback_customer_id("email:h") != fallback_customer_id("email:i")
    assert fb.startswith("c_") and len(fb) == 22


def test_singletons_get_their_fallback_id_without_assignments() -> None:
    graph = IdentityGraph()
    out = run(graph, link("anonymous_id:a"), link("user_id:u", "anonymous_id:b"))
    assert graph.customer_of("anonymous_id:a") == fallback_customer_id("anonymous_id:a")
    # a cluster created by an event is named after its first (strongest) node; the other
    # nodes of that event are assigned to it
    user = fallback_customer_id("user_id:u")
    assert graph.customer_of("anonymous_id:b") == graph.customer_of("user_id:u") == user
    assert [(a.node, a.customer_id) for a in out.assignments] == [("anonymous_id:b", user)]
    assert out.merges == ()
    assert graph.customer_of("nobody:x") is None


def test_anonymous_visitor_logging_in_keeps_the_known_customer_id() -> None:
    graph = IdentityGraph()
    run(graph, link("crm_id:k", "email:h", hours=0))
    run(graph, link("anonymous_id:a", hours=5))
    known = fallback_customer_id("crm_id:k")
    out = run(graph, link("email:h", "anonymous_id:a", hours=6))
    assert graph.customer_of("anonymous_id:a") == known
    assert [(a.node, a.customer_id) for a in out.assignments] == [("anonymous_id:a", known)]
    assert [(m.absorbed, m.survivor) for m in out.merges] == [
        (fallback_customer_id("anonymous_id:a"), known)
    ]


def test_older_cluster_survives_even_when_it_is_anonymous() -> None:
    graph = IdentityGraph()
    run(graph, link("anonymous_id:a", hours=0), link("user_id:u", hours=1))
    run(graph, link("user_id:u", "anonymous_id:a", hours=2))
    assert graph.customer_of("user_id:u") == fallback_customer_id("anonymous_id:a")


def test_survivor_tie_goes_to_the_smaller_customer_id() -> None:
    graph = IdentityGraph()
    run(graph, link("email:x"), link("email:y"))
    run(graph, link("email:x", "email:y", hours=1))
    expected = min(fallback_customer_id("email:x"), fallback_customer_id("email:y"))
    assert graph.customer_of("email:x") == graph.customer_of("email:y") == expected


def test_chain_of_merges_flattens_assignments_and_merges() -> None:
    graph, off = IdentityGraph(), GuardrailConfig.off()
    run(graph, *(link(f"email:{i}", hours=10 - i) for i in range(4)))  # email:3 is oldest
    first = run(graph, link("email:0", "phone:p", hours=20))  # nothing absorbed yet
    out = run(
        graph,
        link("email:0", "email:1", hours=21),
        link("email:1", "email:2", hours=22),
        link("email:2", "email:3", hours=23),
        cfg=off,
    )
    final = fallback_customer_id("email:3")
    nodes = ["email:0", "email:1", "email:2", "email:3", "phone:p"]
    assert all(graph.customer_of(n) == final for n in nodes)
    assert {a.node for a in out.assignments} == set(nodes) - {"email:3"}
    assert all(a.customer_id == final for a in out.assignments)
    assert {m.absorbed for m in out.merges} == {
        fallback_customer_id(f"email:{i}") for i in range(3)
    }
    assert all(m.survivor == final for m in out.merges)
    versions = [a.version for a in (*first.assignments, *out.assignments)]
    versions += [m.version for m in out.merges]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert graph.seq == versions[-1]


def test_absorbed_ids_are_remapped_when_their_survivor_is_absorbed() -> None:
    graph = IdentityGraph()
    run(graph, link("email:old", hours=0), link("email:mid", hours=1), link("email:new", hours=2))
    run(graph, link("email:mid", "email:new", hours=3))
    out = run(graph, link("email:old", "email:mid", hours=4))
    final = fallback_customer_id("email:old")
    assert {(m.absorbed, m.survivor) for m in out.merges} == {
        (fallback_customer_id("email:mid"), final),
        (fallback_customer_id("email:new"), final),
    }


# --- guardrails --------------------------------------------------------------------------------


def test_unique_conflict_keeps_the_old_crm_cluster_intact() -> None:
    graph = IdentityGraph()
    run(graph, link("crm_id:A", "email:shared", "phone:a"))
    out = run(graph, link("crm_id:B", "email:shared", hours=1))
    a, b = fallback_customer_id("crm_id:A"), fallback_customer_id("crm_id:B")
    assert graph.customer_of("email:shared") == graph.customer_of("phone:a") == a
    assert graph.customer_of("crm_id:B") == b
    assert out.assignments == () and out.merges == ()
    [refusal] = out.refusals
    assert (refusal.node, refusal.reason, refusal.customer_id) == (
        "email:shared",
        "unique_conflict",
        b,
    )
    assert "crm_id:A" in refusal.detail and "crm_id:B" in refusal.detail


def test_unique_conflict_drops_weakest_nodes_until_the_rest_fits() -> None:
    graph = IdentityGraph()
    run(graph, link("user_id:u1", "email:e1"))
    out = run(graph, link("user_id:u2", "email:e1", "anonymous_id:new", hours=1))
    assert [(r.node, r.reason) for r in out.refusals] == [
        ("anonymous_id:new", "unique_conflict"),
        ("email:e1", "unique_conflict"),
    ]
    assert graph.customer_of("anonymous_id:new") == fallback_customer_id("anonymous_id:new")
    assert not same(graph, "user_id:u1", "user_id:u2")


def test_caps_refuse_one_identifier_too_many() -> None:
    graph = IdentityGraph()
    run(graph, *(link("user_id:u", f"email:{i}", hours=i) for i in range(3)))
    out = run(graph, link("user_id:u", "email:3", hours=5))
    assert [(r.node, r.reason) for r in out.refusals] == [("email:3", "cap_exceeded")]
    assert same(graph, "user_id:u", "email:0", "email:1", "email:2")
    assert graph.customer_of("email:3") == fallback_customer_id("email:3")
    cluster = graph.cluster(graph.find("user_id:u") or "")
    assert cluster.count("email") == 3 and cluster.size == 4


def test_caps_apply_to_merging_clusters() -> None:
    graph = IdentityGraph()
    run(graph, link("phone:1", "email:a"), link("phone:2", "email:b"), link("phone:3", "email:c"))
    run(graph, link("email:a", "email:b", hours=1))
    out = run(graph, link("email:a", "email:c", hours=2))
    assert [r.reason for r in out.refusals] == ["cap_exceeded"]  # 3 phones > 2
    assert not same(graph, "email:a", "email:c")


def test_switchboard_phone_is_blocked_after_k_customers() -> None:
    graph, no_caps = IdentityGraph(), GuardrailConfig(caps={})  # the hub rule alone
    run(graph, *(link(f"email:p{i}", hours=i) for i in range(6)))  # six known people
    outs = [
        run(graph, link(f"email:p{i}", "phone:switch", hours=10 + i), cfg=no_caps) for i in range(6)
    ]
    refused = [r for out in outs for r in out.refusals]
    assert graph.is_blocked("phone:switch")
    assert [(r.node, r.reason) for r in refused] == [("phone:switch", "hub")] * 3
    assert "would join 4 customers" in refused[0].detail
    joined = {graph.customer_of(f"email:p{i}") for i in range(6)}
    assert len(joined) == 4  # p0..p2 joined (K=3 customers), p3, p4, p5 stay apart
    # later events carrying the hub link nothing through it
    out = run(graph, link("user_id:new", "phone:switch", hours=30), cfg=no_caps)
    assert [r.reason for r in out.refusals] == ["hub"]
    assert graph.customer_of("user_id:new") == fallback_customer_id("user_id:new")
    assert run(graph, link("phone:switch", hours=31)).refusals == ()


def test_caps_stop_a_switchboard_before_the_hub_rule_does() -> None:
    graph = IdentityGraph()
    run(graph, *(link(f"email:p{i}", hours=i) for i in range(4)))
    outs = [run(graph, link(f"email:p{i}", "phone:switch", hours=10 + i)) for i in range(4)]
    assert [r.reason for out in outs for r in out.refusals] == ["cap_exceeded"]
    assert len({graph.customer_of(f"email:p{i}") for i in range(4)}) == 2


def test_rotating_cookies_do_not_make_an_email_a_hub() -> None:
    graph = IdentityGraph()
    run(graph, link("email:me"))
    for i in range(5):
        run(graph, link(f"anonymous_id:c{i}", hours=i + 1))
        run(graph, link("email:me", f"anonymous_id:c{i}", hours=i + 1.5))
    assert not graph.is_blocked("email:me")
    assert same(graph, "email:me", *(f"anonymous_id:c{i}" for i in range(5)))


def test_placeholders_are_refused() -> None:
    graph = IdentityGraph()
    cfg = GuardrailConfig(placeholders=frozenset({"undefined", "phone:0000"}))
    out = run(
        graph,
        link("user_id:undefined", "email:a"),
        link("user_id:undefined", "email:b"),
        link("phone:0000"),
        cfg=cfg,
    )
    assert [(r.node, r.reason) for r in out.refusals] == [
        ("user_id:undefined", "placeholder"),
        ("user_id:undefined", "placeholder"),
        ("phone:0000", "placeholder"),
    ]
    assert out.refusals[2].customer_id == ""
    assert "user_id:undefined" not in graph and "phone:0000" not in graph
    assert not same(graph, "email:a", "email:b")


def test_expired_cookie_links_nothing_new() -> None:
    graph = IdentityGraph()
    cfg = GuardrailConfig(cookie_ttl=timedelta(days=30))
    run(graph, link("anonymous_id:lab"), link("email:a", "anonymous_id:lab", hours=1), cfg=cfg)
    out = run(graph, link("email:b", "anonymous_id:lab", hours=24 * 40), cfg=cfg)
    assert [(r.node, r.reason) for r in out.refusals] == [("anonymous_id:lab", "cookie_expired")]
    assert graph.customer_of("email:b") == fallback_customer_id("email:b")
    again = run(graph, link("email:a", "anonymous_id:lab", hours=24 * 41), cfg=cfg)
    assert again.refusals == ()  # nothing new to link


def test_guardrails_off_gives_connected_components() -> None:
    graph = IdentityGraph()
    cfg = GuardrailConfig.off()
    run(
        graph, *(link("crm_id:A" if i % 2 else "crm_id:B", f"email:{i}") for i in range(8)), cfg=cfg
    )
    run(graph, link("email:0", "email:1"), cfg=cfg)
    assert same(graph, "crm_id:A", "crm_id:B", *(f"email:{i}" for i in range(8)))


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        GuardrailConfig(caps={"fax": 1})
    with pytest.raises(ConfigError):
        GuardrailConfig(hub_limit=0)
    with pytest.raises(ConfigError):
        GuardrailConfig(cookie_ttl=timedelta(0))


# --- forget ------------------------------------------------------------------------------------


def test_forget_removes_the_customer_and_replays_do_not_resurrect_it() -> None:
    graph = IdentityGraph()
    log = [
        link("anonymous_id:a"),
        link("email:e", hours=0.5),
        link("email:e", "anonymous_id:a", hours=1),
        link("crm_id:k", "email:e", hours=2),
    ]
    run(graph, *log)
    customer = graph.customer_of("email:e")
    result = forget(graph, "crm_id:k")
    assert result.customer_id == customer
    assert set(result.nodes) == {"anonymous_id:a", "email:e", "crm_id:k"}
    assert fallback_customer_id("email:e") in result.absorbed
    assert len(graph) == 0
    out = run(graph, *log, link("email:e", "phone:p", hours=3))
    assert len(graph) == 1 and graph.customer_of("phone:p") == fallback_customer_id("phone:p")
    assert {r.reason for r in out.refusals} == {"forgotten"}
    assert len(out.refusals) == 7
    restored = IdentityGraph.restore([graph.snapshot()])
    run(restored, *log)
    assert "email:e" not in restored


def test_forget_an_unknown_node_still_keeps_it_out() -> None:
    graph = IdentityGraph()
    assert forget(graph, "email:ghost").customer_id == ""
    assert run(graph, link("email:ghost")).refusals[0].reason == "forgotten"


# --- persistence -------------------------------------------------------------------------------


def _wire(delta: GraphDelta) -> GraphDelta:
    return GraphDelta.model_validate_json(delta.model_dump_json())


def test_changelog_round_trip_through_json() -> None:
    graph = IdentityGraph()
    cfg = GuardrailConfig(caps={}, cookie_ttl=timedelta(days=1))
    messages = []
    batches = [
        [link("anonymous_id:a"), link("email:e", "anonymous_id:a", hours=1)],
        [link("crm_id:k", "email:e", hours=2), link("crm_id:j", "email:e", hours=3)],
        *[
            [link(f"email:p{i}", hours=4 + i), link(f"email:p{i}", "phone:hub", hours=5 + i)]
            for i in range(5)
        ],
    ]
    snapshot_at = 3
    for i, batch in enumerate(batches):
        run(graph, *batch, cfg=cfg)
        messages.append(_wire(graph.dirty_entries()))
        if i == snapshot_at:
            snapshot = _wire(graph.snapshot())
    forget(graph, "crm_id:j")
    messages.append(_wire(graph.dirty_entries()))
    assert graph.dirty_entries().parents == {}
    restored = IdentityGraph.restore(messages)
    assert restored.snapshot() == graph.snapshot()
    assert restored.is_blocked("phone:hub") and restored.seq == graph.seq
    assert "crm_id:j" not in restored and restored.is_forgotten("crm_id:j")
    assert IdentityGraph.restore([_wire(graph.snapshot())]).snapshot() == graph.snapshot()
    compacted = IdentityGraph.restore([snapshot, *messages[snapshot_at + 1 :]])
    assert compacted.snapshot() == graph.snapshot()


def test_restore_refuses_an_inconsistent_changelog() -> None:
    graph = IdentityGraph()
    run(graph, link("email:a", "phone:b"))
    delta = graph.dirty_entries()
    broken = delta.model_copy(update={"first_seen": {}})
    with pytest.raises(ValueError, match="no cluster info"):
        IdentityGraph.restore([broken])
