"""Stitching evaluation against hand-computed B-cubed and pairwise scores."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pipeline.stitching_eval import best_achievable, crm_conflicts, evaluate

TRUTH = {"a": "P1", "b": "P1", "c": "P1", "d": "P2", "e": "P2"}


def test_mixed_clustering() -> None:
    # X = {a, b} (P1, P1), Y = {c, d, e} (P1, P2, P2)
    score = evaluate({"a": "X", "b": "X", "c": "Y", "d": "Y", "e": "Y"}, TRUTH)
    # precision per item: a 2/2, b 2/2, c 1/3, d 2/3, e 2/3 -> 11/3 over 5
    # recall per item: a 2/3, b 2/3, c 1/3, d 2/2, e 2/2 -> 11/3 over 5
    assert score.bcubed_precision == pytest.approx(float(Fraction(11, 15)))
    assert score.bcubed_recall == pytest.approx(float(Fraction(11, 15)))
    assert score.bcubed_f1 == pytest.approx(float(Fraction(11, 15)))
    # pairs together and right: ab, de = 2; predicted pairs 1 + 3 = 4; true pairs 3 + 1 = 4
    assert (score.pairwise_precision, score.pairwise_recall) == (0.5, 0.5)
    assert score.largest_cluster == 3 and score.predicted_clusters == 2
    assert score.impure_clusters == 1 and score.split_persons == 1
    assert score.crm_conflicts == 0 and score.items == 5 and score.true_persons == 2


def test_everything_in_one_cluster() -> None:
    truth = {"a": "P1", "b": "P1", "c": "P2", "d": "P2"}
    score = evaluate(dict.fromkeys(truth, "all"), truth)
    assert score.bcubed_precision == 0.5 and score.bcubed_recall == 1.0
    assert score.bcubed_f1 == pytest.approx(2 / 3)
    assert score.pairwise_precision == pytest.approx(2 / 6) and score.pairwise_recall == 1.0
    assert score.impure_clusters == 1 and score.split_persons == 0


def test_singletons_and_missing_predictions() -> None:
    truth = {"a": "P1", "b": "P1", "c": "P2", "d": "P2"}
    score = evaluate({"a": "A", "c": "C"}, truth)  # b and d are missing: clusters of their own
    assert score.bcubed_precision == 1.0 and score.bcubed_recall == 0.5
    assert score.pairwise_precision == 1.0 and score.pairwise_recall == 0.0
    assert score.pairwise_f1 == 0.0 and score.predicted_clusters == 4
    assert score.split_persons == 2


def test_crm_conflicts_count_clusters_with_two_crm_ids() -> None:
    nodes = {"crm_id:1": "X", "crm_id:2": "X", "email:a": "X", "crm_id:3": "Y", "crm_id:4": "Z"}
    assert crm_conflicts(nodes) == 1
    truth = dict.fromkeys(nodes, "P")
    assert evaluate(nodes, truth).crm_conflicts == 1
    assert evaluate({"e1": "X"}, {"e1": "P"}, node_clusters=nodes).crm_conflicts == 1


def test_best_achievable_never_links_two_people() -> None:
    links = {
        "e1": ("P1", ["phone:shared", "email:a"]),
        "e2": ("P2", ["phone:shared", "email:b"]),
        "e3": ("P1", ["email:a", "anonymous_id:x"]),
        "e4": ("P1", ["anonymous_id:y"]),
    }
    best = best_achievable(links)
    assert best["e1"] == best["e3"] and len({best["e1"], best["e2"], best["e4"]}) == 3
    assert best_achievable([(e, p, n) for e, (p, n) in links.items()]) == best
    score = evaluate(best, {e: p for e, (p, _) in links.items()})
    assert score.bcubed_precision == 1.0
    # recall: e1 2/3, e3 2/3, e4 1/3, e2 1 -> 8/3 over 4
    assert score.bcubed_recall == pytest.approx(2 / 3)


def test_render_is_a_table() -> None:
    text = evaluate({"a": "X", "b": "X"}, {"a": "P", "b": "P"}).render()
    lines = text.splitlines()
    assert lines[0].startswith("metric") and "B-cubed precision" in text
    assert any(line.startswith("B-cubed F1") and line.endswith("1.0000") for line in lines)


def test_empty_input() -> None:
    score = evaluate({}, {})
    assert score.items == 0 and score.bcubed_f1 == 1.0 and score.largest_cluster == 0
