"""``touchpoint eval stitching`` after an adversarial simulation through the real pipeline
(broker, one worker, ClickHouse): the project's stitching targets after the overrides.

At the targets' scale, 20,000 customers (3 minutes alone, 5 in the test command). Run with
``-s`` to see the figures; ``TOUCHPOINT_TEST_EVAL_REPORT=path`` keeps the report.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import pipeline.cli_eval  # noqa: F401  # registers `touchpoint eval`
from pipeline.chclient import ClickHouseConfig, connect
from pipeline.cli import cli
from pipeline.eval_stitching import TARGET_PRECISION, TARGET_RECALL_GAP
from pipeline.identity_config import DEFAULT_CAPS
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.adversarial import load_ground_truth
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.settings import settings_env
from pipeline.testing.stack import wait_for
from schemas.identity import fallback_customer_id

REPORT_ENV = "TOUCHPOINT_TEST_EVAL_REPORT"
"""Where to keep the JSON report of a run (default: the test's tmp dir)."""


def _simulate(settings: Any, customers: int, truth: Path) -> int:
    """Produce an adversarial run (default mix); returns its valid events."""
    start = datetime.now(UTC) - timedelta(hours=2)
    config = SimulationConfig(seed=11, start=start, customers=customers, adversarial=True)
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="eval-test")
    for event in simulate(config, truth):
        producer.send(settings.raw_topic, key=event.key, value=event.payload)
    producer.flush()
    producer.close()
    gt = load_ground_truth(truth)
    return len(gt.events) - len(gt.malformed)


def _marker(n: int, tag: str, ids: dict[str, str]) -> dict[str, Any]:
    at = datetime.now(UTC) + timedelta(seconds=n)
    return {
        "event_id": f"barrier-{n}-{tag}", "occurred_at": at.isoformat(), "channel": "web",
        "event_type": "page_view", "identifiers": ids,
    }  # fmt: skip


def _current_of(client: Any, event_id: str) -> str | None:
    sql = "SELECT current_customer_id FROM touchpoints_current WHERE event_id = {e:String}"
    rows = client.query(sql, parameters={"e": event_id}).result_rows
    return rows[0][0] if rows else None


def _barrier(settings: Any, timeout: float) -> None:
    """Wait until the resolver and the identity sink have handled every link sent so far.

    Every stored event's link is on the (one-partition) links topic already; a marker
    event sent after them, then a second one linking a new email to its cookie, is
    re-attributed (an override) only once the resolver got that far, in order.
    """
    client = connect(ClickHouseConfig.from_settings(settings))
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="eval-barrier")
    tag = uuid.uuid4().hex
    cookie = f"barrier-{tag}"
    first = _marker(0, tag, {"anonymous_id": cookie})
    second = _marker(1, tag, {"anonymous_id": cookie, "email": f"{tag}@barrier.test"})
    for event in (first, second):
        producer.send(settings.raw_topic, key=cookie.encode(), value=orjson.dumps(event))
        producer.flush()
        wait_for(partial(_current_of, client, event["event_id"]), timeout, "a marker stored")
    producer.close()
    merged = fallback_customer_id(f"anonymous_id:{cookie}")
    caught_up = lambda: _current_of(client, second["event_id"]) == merged  # noqa: E731
    wait_for(caught_up, timeout, "the resolver to catch up")


def _settle(settings: Any, valid: int, timeout: float) -> None:
    """Wait for every valid event, then for the resolver to have handled their links."""
    client = connect(ClickHouseConfig.from_settings(settings))
    stored = "SELECT uniqExact(event_id) FROM touchpoints"
    wait_for(lambda: client.query(stored).result_rows[0][0] >= valid, timeout, "every event")
    _barrier(settings, timeout)


def _eval(settings: Any, truth: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    args = ["eval", "stitching", "--truth", str(truth), "--json", *extra]
    args += ["--clickhouse-url", settings.clickhouse_url]
    args += ["--database", settings.clickhouse_database]
    result = CliRunner().invoke(cli, args, env=settings_env(settings))
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def _view(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in report["views"] if v["name"] == name)


def _missed_targets(report: dict[str, Any]) -> list[str]:
    """The project's targets after the overrides that the run missed, with the figures."""
    current = _view(report, "current")
    score, best = current["score"], report["best"]["bcubed_recall"]
    missed = []
    if score["bcubed_precision"] < TARGET_PRECISION:
        missed.append(
            f"B-cubed precision {score['bcubed_precision']:.4f} < {TARGET_PRECISION} (ceiling "
            f"of identifier-only rules: {report['ceiling']['bcubed_precision']:.4f}; on attributable "
            f"events: {current['attributable']['bcubed_precision']:.4f})"
        )
    if current["recall_gap"] > TARGET_RECALL_GAP:
        missed.append(f"B-cubed recall {score['bcubed_recall']:.4f}, best achievable {best:.4f}")
    if score["crm_conflicts"]:
        missed.append(f"{score['crm_conflicts']} clusters with two crm_ids")
    over = {k: n for k, n in current["most_held"].items() if n > DEFAULT_CAPS[k]}
    if current["over_caps"] or over:
        missed.append(f"{current['over_caps']} clusters over the caps (most held: {over})")
    return missed


def _assert_targets(report: dict[str, Any]) -> None:
    """Every target of the project, after the overrides, with the figures when one is missed."""
    counts = report["counts"]
    assert counts["missing"] == 0 and counts["unknown_nodes"] == 0, counts
    missed = _missed_targets(report)
    assert not missed, "; ".join(missed)
    current = _view(report, "current")
    assert current["attributable"]["bcubed_precision"] >= TARGET_PRECISION
    assert all(check["ok"] for check in report["checks"]), report["checks"]


def _assert_squash(report: dict[str, Any]) -> None:
    """The third view, after the squash rewrote the stored ids, is the current one."""
    squashed, current = _view(report, "squashed"), _view(report, "current")
    assert squashed["available"], squashed["reason"]
    assert report["squash"] is not None and report["squash"]["rows_rewritten"]["touchpoints"] > 0
    for key in ("bcubed_precision", "bcubed_recall", "predicted_clusters"):
        assert squashed["score"][key] == pytest.approx(current["score"][key]), key


def _run(
    settings: Any, start_worker: Any, tmp_path: Path, customers: int, timeout: float
) -> tuple[int, dict[str, Any]]:
    """Simulate, settle, then one ``eval stitching --squash --min-precision 0.99``: the
    stamped and current views are scored before the squash, the squashed one after it."""
    truth = tmp_path / "truth.jsonl"
    start_worker(settings)
    began = time.monotonic()
    valid = _simulate(settings, customers, truth)
    _settle(settings, valid, timeout)
    took = time.monotonic() - began
    print(f"\n{customers} customers, {valid} valid events, pipeline settled in {took:.1f}s")
    code, report = _eval(settings, truth, "--squash", "--min-precision", str(TARGET_PRECISION))
    saved = Path(os.environ.get(REPORT_ENV, tmp_path / "report.json"))
    saved.write_text(json.dumps(report, indent=2))
    scores = {
        v["name"]: v["score"] and {k: v["score"][k] for k in ("bcubed_precision", "bcubed_recall")}
        for v in report["views"]
    }
    print(
        f"best recall {report['best']['bcubed_recall']:.4f}; views {scores}; eval {report['seconds']}s"
    )
    return code, report


CUSTOMERS = 20_000
"""The scale of the project's stitching targets (the default adversarial mix of at least
20,000 customers: about 190,000 valid events, 3 minutes with the worker alone). At 2,000
customers precision is lower (about 0.988): in a smaller day a switchboard's first
overlapping calls come later, so more of its lone calls are stamped with one customer before
the line is found, and those cannot be split afterwards."""


@pytest.mark.timeout(1500)
def test_adversarial_run_meets_the_stitching_targets(
    pipeline_settings: Any, start_worker: Any, tmp_path: Path
) -> None:
    code, report = _run(pipeline_settings, start_worker, tmp_path, CUSTOMERS, timeout=1200)
    counts = report["counts"]
    assert counts["joined"] > 150_000 and counts["not_in_truth"] == 2  # the barrier's markers
    assert report["best"]["bcubed_precision"] == 1.0
    stamped, current = _view(report, "stamped"), _view(report, "current")
    # late links are re-attributed; events with the same identifiers share a customer
    assert stamped["score"]["bcubed_recall"] < current["score"]["bcubed_recall"]
    # the identifier-set bound caps identifier-only rules; shared lines may pass it a little
    assert current["score"]["bcubed_precision"] <= report["ceiling"]["bcubed_precision"] + 0.005
    _assert_targets(report)
    _assert_squash(report)
    assert code == 0, f"--min-precision {TARGET_PRECISION} failed the run: exit {code}"
