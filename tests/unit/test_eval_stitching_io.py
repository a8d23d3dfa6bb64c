"""``touchpoint eval stitching`` without a pipeline: a hand-made truth file and a fake
ClickHouse client, scored by hand."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import pipeline.cli_eval  # noqa: F401  # registers `touchpoint eval`
from pipeline import eval_stitching_io as io
from pipeline.cli import cli
from pipeline.eval_stitching import Scoring, score_view
from pipeline.producers.adversarial import load_ground_truth, pipeline_node

KEY = b"test-key"
ADA = ["email:ada@example.com", "anonymous_id:ck-a", "crm_id:CRM-1"]
BOB = ["email:bob@example.com", "crm_id:CRM-2"]
CY = ["anonymous_id:ck-c"]
SHARED = "phone:+14155550101"  # a household phone: Ada's and Bob's
EVENTS: dict[str, tuple[int, list[str]]] = {
    "e1": (1, ["anonymous_id:ck-a"]),
    "e2": (1, ["anonymous_id:ck-a", "email:ada@example.com"]),
    "e3": (1, ["email:ada@example.com", "crm_id:CRM-1"]),
    "e4": (1, [SHARED]),
    "e5": (2, [SHARED]),
    "e6": (2, ["email:bob@example.com", "crm_id:CRM-2"]),
    "e7": (3, ["anonymous_id:ck-c", "chat_visitor_id:nobody-knows"]),
}
STAMPED = {"e1": "A1", "e2": "A2", "e3": "A2", "e4": "P", "e5": "P", "e6": "B", "e7": "C"}
CURRENT = {**STAMPED, "e1": "A2"}


def _customer(who: int, ids: list[str]) -> dict[str, Any]:
    return {
        "kind": "customer", "id": who, "segment": "young", "arrived": "2024-05-01T00:00:00Z",
        "outcome": "censored", "stages": [], "ended_at": None, "causes": [],
        "identifiers": sorted(ids), "special": {},
    }  # fmt: skip


def _truth_file(path: Path) -> Path:
    rows: list[Any] = [{"kind": "header", "version": 1, "seed": 0, "adversarial": True}]
    rows += [[e, who, None, None] for e, (who, _) in EVENTS.items()]
    rows += [["e8", 1, None, "not_json"], ["e9", 3, None, None]]  # malformed; never stored
    rows += [_customer(1, [*ADA, SHARED]), _customer(2, [*BOB, SHARED]), _customer(3, CY)]
    rows += [
        {"kind": "component", "customer": c, "ids": ids} for c, ids in ((1, ADA), (2, BOB), (3, CY))
    ]
    rows += [{"kind": "misleading", "id": SHARED, "reason": "household_phone", "owners": [1, 2]}]
    rows += [{"kind": "summary"}]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _node(identifier: str) -> str:
    return pipeline_node(identifier, KEY)


@dataclass
class FakeClient:
    """Answers the three queries of the evaluation from dicts."""

    stamped: dict[str, str] = field(default_factory=lambda: dict(STAMPED))
    current: dict[str, str] = field(default_factory=lambda: dict(CURRENT))
    refused: list[tuple[str, str]] = field(default_factory=list)

    def query(self, sql: str) -> Any:
        nodes = {
            **{e: [_node(n) for n in ns] for e, (_, ns) in EVENTS.items()},
            "x1": ["user_id:u"],
        }
        if sql == io.STAMPED_SQL:
            rows = [(e, c, nodes[e]) for e, c in {**self.stamped, "x1": "X"}.items()]
        elif sql == io.CURRENT_SQL:
            rows = list({**self.current, "x1": "X"}.items())
        elif sql == io.REFUSED_SQL:
            rows = list(self.refused)
        else:
            raise AssertionError(f"unexpected query {sql}")
        return SimpleNamespace(result_rows=rows)


def test_truth_index_maps_identifiers_to_pipeline_nodes(tmp_path: Path) -> None:
    index = io.TruthIndex.of(load_ground_truth(_truth_file(tmp_path / "t.jsonl")), KEY)
    assert set(index.persons) == {*EVENTS, "e9"}  # the malformed e8 is left out
    hashed = _node("email:ada@example.com")
    assert hashed != "email:ada@example.com" and index.owners[hashed] == 1
    assert index.owners[_node("crm_id:CRM-2")] == 2 == index.owners["crm_id:CRM-2"]
    assert _node(SHARED) not in index.owners and _node(SHARED) in index.known  # misleading


def test_every_view_scored_against_the_truth(tmp_path: Path) -> None:
    report = io.evaluate_stitching(FakeClient(), "db", _truth_file(tmp_path / "t.jsonl"), KEY)
    c = report.counts
    assert (c.truth_valid, c.stored, c.joined, c.missing, c.not_in_truth) == (8, 8, 7, 1, 1)
    assert c.unknown_nodes == 1 and c.attributable == 5  # e4 and e5 carry only the shared phone
    # best: {e1 e2 e3} {e4} {e5} {e6} {e7}; recall 3/4 * 3 + 1/4 + 1/2 + 1/2 + 1 over 7
    assert report.best.bcubed_precision == 1.0
    assert report.best.bcubed_recall == pytest.approx(float(Fraction(9, 14)))
    # identifier sets: e4 and e5 carry the very same phone: 1/2 each, the rest pure
    assert report.ceiling.bcubed_precision == pytest.approx(6 / 7)
    stamped, current = report.view("stamped"), report.view("current")
    assert stamped.score is not None and current.score is not None
    assert stamped.score.bcubed_recall == pytest.approx(3.5 / 7)
    assert current.score.bcubed_recall == pytest.approx(float(Fraction(9, 14)))
    assert current.score.bcubed_precision == pytest.approx(6 / 7) and current.recall_gap == 0
    assert current.attributable is not None and current.attributable.bcubed_precision == 1.0
    assert current.most_persons == 2 and current.score.impure_clusters == 1
    assert current.over_caps == 0 and current.most_held["email"] == 1
    assert [check.ok for check in report.checks] == [False, True, True, True]


def _scoring(refused: set[tuple[str, str]]) -> Scoring:
    nodes = {
        "a": ("phone:1", "crm_id:X"),
        "b": ("phone:2", "crm_id:Y"),
        "c": ("phone:3",),
    }
    persons = {"a": 1, "b": 2, "c": 1}
    return Scoring(persons, nodes, frozenset(refused), 1.0, {"phone": 2}, frozenset(persons))


def test_caps_count_held_identifiers_and_crm_conflicts_count_every_crm_id() -> None:
    together = {"a": "K", "b": "K", "c": "K"}
    view = score_view("current", together, _scoring(set()))
    assert view.over_caps == 1 and view.most_held == {"phone": 3}
    assert view.score is not None and view.score.crm_conflicts == 1
    view = score_view("current", together, _scoring({("c", "phone:3")}))  # refused: not held
    assert view.over_caps == 0 and view.most_held == {"phone": 2}
    view = score_view("current", {"a": "K", "c": "K"}, _scoring(set()))  # b missing: alone
    assert view.score is not None and view.score.crm_conflicts == 0
    assert view.score.predicted_clusters == 2


def test_squash_view_reasons_and_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    truth = _truth_file(tmp_path / "t.jsonl")
    monkeypatch.setattr(io, "SQUASH_MODULE", "pipeline.no_such_module")
    view = io.evaluate_stitching(FakeClient(), "db", truth, KEY, squash=True).view("squashed")
    assert not view.available and "not importable" in view.reason

    client = FakeClient()

    @dataclass
    class Report:
        rows_rewritten: dict[str, int]

    def squash(c: FakeClient, database: str) -> Report:
        assert c is client and database == "db"
        c.stamped = dict(c.current)
        return Report({"touchpoints": 1})

    monkeypatch.setattr(io, "SQUASH_MODULE", "fake_identity_ops")
    monkeypatch.setitem(sys.modules, "fake_identity_ops", SimpleNamespace(squash=squash))
    view = io.evaluate_stitching(client, "db", truth, KEY).view("squashed")
    assert not view.available and "--squash" in view.reason and client.stamped == STAMPED
    report = io.evaluate_stitching(client, "db", truth, KEY, squash=True)
    squashed = report.view("squashed")
    assert squashed.available and squashed.score == report.view("current").score
    assert report.squash is not None and report.squash["rows_rewritten"] == {"touchpoints": 1}


def test_a_failing_squash_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def squash(client: Any, database: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(io, "SQUASH_MODULE", "fake_identity_ops")
    monkeypatch.setitem(sys.modules, "fake_identity_ops", SimpleNamespace(squash=squash))
    report = io.evaluate_stitching(
        FakeClient(), "db", _truth_file(tmp_path / "t.jsonl"), KEY, squash=True
    )
    assert "boom" in report.view("squashed").reason and report.squash is None


def test_as_dict() -> None:
    @dataclass
    class Report:
        rows: dict[str, int]
        skipped: tuple[str, ...]

    assert io.as_dict(Report({"t": 1}, ("x",))) == {"rows": {"t": 1}, "skipped": ["x"]}
    assert io.as_dict({"n": 1, "at": Path("/p")}) == {"n": 1, "at": repr(Path("/p"))}
    assert io.as_dict(42) == {"report": "42"}


def _invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    monkeypatch.setattr("pipeline.chclient.connect", lambda cfg: FakeClient())
    env = {"TOUCHPOINT_PII_HASH_KEY": KEY.decode(), "TOUCHPOINT_PII_MODE": "hash"}
    truth = _truth_file(tmp_path / "t.jsonl")
    return CliRunner().invoke(cli, ["eval", "stitching", "--truth", str(truth), *args], env=env)


def test_cli_json_and_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke(tmp_path, monkeypatch, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [v["name"] for v in report["views"]] == ["stamped", "current", "squashed"]
    assert report["counts"]["joined"] == 7
    assert _invoke(tmp_path, monkeypatch, "--json", "--min-precision", "0.8").exit_code == 0
    result = _invoke(tmp_path, monkeypatch, "--json", "--min-precision", "0.9")
    assert result.exit_code == 1 and "below 0.9" in result.stderr


def test_cli_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    for text in ("as stamped", "after overrides", "B-cubed precision", "best achievable", "NO"):
        assert text in result.stdout
    assert "0.8571" in result.stdout  # 6/7


def test_cli_unreadable_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.chclient.connect", lambda cfg: FakeClient())
    args = ["eval", "stitching", "--truth", str(tmp_path / "missing.jsonl")]
    # wide enough that the error never wraps inside the (long, under xdist) tmp path
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "400"})
    assert result.exit_code == 2 and "missing.jsonl" in result.stderr


def test_help_names_every_env_var() -> None:
    result = CliRunner().invoke(cli, ["eval", "stitching", "--help"], env={"COLUMNS": "200"})
    for var in ("TOUCHPOINT_EVAL_STITCHING_TRUTH", "TOUCHPOINT_EVAL_STITCHING_JSON",
                "TOUCHPOINT_EVAL_STITCHING_SQUASH", "TOUCHPOINT_EVAL_STITCHING_MIN_PRECISION",
                "TOUCHPOINT_CLICKHOUSE_URL", "TOUCHPOINT_CLICKHOUSE_DATABASE"):  # fmt: skip
        assert var in result.stdout


def test_cli_clickhouse_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError

    class Broken(FakeClient):
        def query(self, sql: str) -> Any:
            raise DatabaseError("Code: 60. Unknown table touchpoints_current")

    monkeypatch.setattr("pipeline.chclient.connect", lambda cfg: Broken())
    args = ["eval", "stitching", "--truth", str(_truth_file(tmp_path / "t.jsonl"))]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "Unknown table" in result.stderr
