"""Which dead letters a GDPR forget erases (pure part: the payload names the person)."""

from __future__ import annotations

from pipeline.identity_ops_dead_letters import names_person

NODES = frozenset({"email:h(ada@example.com)", "phone:h(+14155550101)"})


def node_of(kind: str, value: str) -> str | None:
    """A stand-in for the validate stage's normalise-and-hash (tested on its own)."""
    if kind == "phone":
        digits = "".join(c for c in value if c.isdigit())
        return f"phone:h(+{digits})" if len(digits) == 11 else None
    return f"{kind}:h({value.strip().lower()})"


def test_a_hashed_identifier_in_any_format_names_the_person() -> None:
    payload = '{"event_id": "d1", "identifiers": {"phone": "+1 (415) 555-0101"}}'
    assert names_person(payload, [], NODES, "ada@example.com", node_of)


def test_nested_and_listed_identifiers_are_read() -> None:
    payload = '{"batch": [{"identifiers": {"email": " ADA@example.com"}}]}'
    assert names_person(payload, [], NODES, "someone-else", node_of)


def test_the_raw_value_is_found_in_a_payload_too_broken_to_parse() -> None:
    garbled = '{"identifiers": {"email": "Ada@Example.com"'
    assert names_person(garbled, [], NODES, "ada@example.com", node_of)
    assert names_person("x", ["Ada@Example.com"], NODES, "ada@example.com", node_of)


def test_other_peoples_dead_letters_are_kept() -> None:
    bob = '{"identifiers": {"email": "bob@example.com", "phone": "not a phone"}}'
    assert not names_person(bob, ["bob@example.com"], NODES, "ada@example.com", node_of)
    assert not names_person("not json at all", [], NODES, "ada@example.com", node_of)
