"""Failpoints: parsing, matching and the n-th hit (no process is killed here)."""

from __future__ import annotations

import pytest

from pipeline import failpoints
from pipeline.failpoints import FailpointError


def test_unarmed_failpoints_do_nothing() -> None:
    failpoints.configure("")
    failpoints.hit("sink.before_insert", "touchpoints")


def test_raise_fires_only_on_matching_keys() -> None:
    failpoints.configure("ingest.event=raise~poison-")
    try:
        failpoints.hit("ingest.event", "ev-1")
        failpoints.hit("other", "poison-1")
        with pytest.raises(FailpointError, match=r"ingest\.event.*poison-2"):
            failpoints.hit("ingest.event", "poison-2")
    finally:
        failpoints.configure("")


def test_nth_hit_fires_once() -> None:
    failpoints.configure("x=raise@3")
    try:
        failpoints.hit("x")
        failpoints.hit("x")
        with pytest.raises(FailpointError):
            failpoints.hit("x")
        failpoints.hit("x")  # the 4th passes
    finally:
        failpoints.configure("")


@pytest.mark.parametrize("spec", ["x", "x=boom", "x=sleep", "x=exit@two", "=exit"])
def test_bad_specs_name_the_part(spec: str) -> None:
    with pytest.raises(ValueError, match="failpoint"):
        failpoints.parse(spec)


def test_sleep_parses_seconds() -> None:
    armed = failpoints.parse("a=sleep:0.5~t@2")["a"]
    assert (armed.action, armed.argument, armed.match, armed.nth) == ("sleep", 0.5, "t", 2)


def test_prelude_runs_only_when_the_failpoint_fires() -> None:
    ran: list[str] = []
    failpoints.configure("x=raise@2")
    try:
        failpoints.hit("x", prelude=lambda: ran.append("first"))
        assert ran == []
        with pytest.raises(FailpointError):
            failpoints.hit("x", prelude=lambda: ran.append("second"))
        assert ran == ["second"]
    finally:
        failpoints.configure("")
