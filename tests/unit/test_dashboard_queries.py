"""The dashboard's filters and SQL builders: ranges and buckets, validation of every filter,
user values only ever as bound parameters, and the data helpers (detector, warnings)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from pipeline import dashboard_queries as dq
from pipeline.dashboard_data import detector, feed_urls, jsonable, warnings
from pipeline.dashboard_queries import Filters, parse_filters
from pipeline.settings import load_settings

NOW = datetime(2026, 3, 1, 12, 30, 15, tzinfo=UTC)
PLACEHOLDER = re.compile(r"\{(\w+):[^}]+\}")
EVIL = "x' OR 1=1 --"
ALL_BUILDERS = (*dq.PANELS, dq.freshness)


def test_default_range_is_the_last_hour_in_whole_minutes() -> None:
    f = parse_filters({}, NOW)
    assert f.end == datetime(2026, 3, 1, 12, 31, tzinfo=UTC)  # the current minute is included
    assert f.start == f.end - timedelta(hours=1)
    assert (f.range_name, f.channel, f.segment, f.step) == ("1h", "", "", 60)
    on_the_minute = parse_filters({}, NOW.replace(second=0, microsecond=0))
    assert on_the_minute.end == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "step"),
    [("15m", 60), ("1h", 60), ("3h", 300), ("6h", 300), ("24h", 900), ("7d", 10_800),
     ("30d", 21_600)],
)  # fmt: skip
def test_buckets_keep_the_chart_within_its_points(name: str, step: int) -> None:
    f = parse_filters({"range": name}, NOW)
    assert f.seconds == dq.RANGES[name]
    assert f.step == step
    assert f.seconds / f.step <= dq.MAX_POINTS


def test_to_accepts_iso_timestamps_with_or_without_offset() -> None:
    assert parse_filters({"to": "2026-02-01T10:00:30Z"}, NOW).end == datetime(
        2026, 2, 1, 10, 1, tzinfo=UTC
    )
    assert parse_filters({"to": "2026-02-01T11:00:00+01:00"}, NOW).end == datetime(
        2026, 2, 1, 10, 0, tzinfo=UTC
    )
    assert parse_filters({"to": "2026-02-01T10:00:00"}, NOW).end.tzinfo == UTC


@pytest.mark.parametrize(
    ("query", "message"),
    [({"range": "2h"}, "range must be one of"), ({"to": "yesterday"}, "ISO 8601"),
     ({"channel": "fax"}, "channel must be one of"), ({"segment": EVIL}, "segment"),
     ({"segment": "s" * 65}, "segment")],
)  # fmt: skip
def test_bad_filters_are_refused_with_a_message(query: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_filters(query, NOW)


def test_all_means_no_filter_and_metric_rows_use_the_rollups() -> None:
    f = parse_filters({"channel": "all", "segment": "all"}, NOW)
    assert (f.channel, f.segment) == ("", "")
    assert f.params()["m_channel"] == "all" and f.params()["m_segment"] == "all"
    g = parse_filters({"channel": "call_center", "segment": "young_digital"}, NOW)
    assert g.params()["m_channel"] == "call_center" and g.params()["segment"] == "young_digital"


@pytest.mark.parametrize("build", ALL_BUILDERS, ids=lambda b: b.__name__)
@pytest.mark.parametrize(("channel", "segment"), [("", ""), ("web", EVIL)])
def test_user_values_travel_only_as_parameters(build: object, channel: str, segment: str) -> None:
    f = Filters(NOW - timedelta(hours=1), NOW, "1h", channel, segment)
    query = build(f)  # type: ignore[operator]
    assert EVIL not in query.sql and "%(" not in query.sql
    used = set(PLACEHOLDER.findall(query.sql))
    assert used <= set(query.params), used - set(query.params)
    if "segment" in used:
        assert query.params["segment"] == EVIL


def test_filters_add_clauses_only_when_set() -> None:
    plain = Filters(NOW - timedelta(hours=1), NOW)
    both = Filters(NOW - timedelta(hours=1), NOW, "1h", "chat", "senior")
    assert "{channel:String}" not in dq.journey_map(plain).sql
    assert "{segment:String}" not in dq.journey_map(plain).sql
    assert "channel = {channel:String}" in dq.journey_map(both).sql
    assert "segment) = {segment:String}" in dq.journey_map(both).sql
    assert "current_customer_id IN" in dq.experience(both).sql
    # metric panels read the roll-up rows of the filter instead of adding clauses
    for q in (dq.funnel(plain), dq.funnel(both), dq.dropoff_series(both)):
        assert "channel = {m_channel:String} AND segment = {m_segment:String}" in q.sql
        assert "FINAL" in q.sql
    assert "channel IN ({channel:String}, 'all')" in dq.alerts_in_range(both).sql
    assert "channel IN" not in dq.recent_alerts(plain).sql


def test_jsonable_gives_utc_iso_and_drops_non_finite() -> None:
    assert jsonable(datetime(2026, 3, 1, 12, 0)) == "2026-03-01T12:00:00Z"
    assert (
        jsonable(datetime(2026, 3, 1, 13, 0, tzinfo=UTC) + timedelta(0)) == "2026-03-01T13:00:00Z"
    )
    assert jsonable(float("nan")) is None and jsonable(float("inf")) is None
    assert jsonable(0.25) == 0.25 and jsonable("web") == "web"


def _status(stage: str, channel: str, rate: float | None, base: float | None) -> dict[str, object]:
    return {"stage": stage, "channel": channel, "window_start": "2026-03-01T12:00:00Z",
            "dropoff_rate": rate, "baseline_rate": base, "zscore": 4.0, "volume": 50,
            "firing": True, "suppressed": ""}  # fmt: skip


def test_detector_prefers_the_live_status_then_the_last_alert() -> None:
    statuses = [_status("purchase", "all", 0.6, 0.4), _status("purchase", "web", 0.5, 0.5)]
    live = detector(statuses, [], "purchase", "all")
    assert live is not None and live["source"] == "live feed" and live["firing"]
    assert live["change"] == pytest.approx(0.2) and live["relative_change"] == pytest.approx(0.5)
    alert = {**_status("consideration", "all", 0.3, 0.2), "state": "resolved"}
    last = detector(statuses, [alert], "consideration", "all")
    assert last is not None and last["source"] == "last alert" and not last["firing"]
    assert detector(statuses, [alert], "advocacy", "all") is None
    no_base = detector([_status("awareness", "all", 0.6, None)], [], "awareness", "all")
    assert no_base is not None and no_base["change"] is None


def test_warnings_name_stale_data_provisional_windows_and_a_missing_feed() -> None:
    settings = load_settings(dashboard_stale_seconds=60)
    f = Filters(NOW - timedelta(hours=1), NOW.replace(second=0))
    fresh = {
        "server_now": "2026-03-01T12:30:15Z", "newest_ingested_at": "2026-03-01T12:20:15Z",
        "metrics_written_at": "2026-03-01T12:30:00Z", "ingest_lag_seconds": 90.0,
        "newest_final_window": "2026-03-01T12:00:00Z",
    }  # fmt: skip
    found = warnings(settings, f, fresh, "http://w:1/stages: refused")
    assert any(w.startswith("stale: no new events for 600 s") for w in found)
    assert not any("stage metrics" in w for w in found)
    assert any(w.startswith("ingest lag 90 s") for w in found)
    assert any("windows from 2026-03-01T12:01:00Z on are not final" in w for w in found)
    assert any(w.startswith("live feed unavailable") for w in found)
    settled = {**fresh, "newest_ingested_at": "2026-03-01T12:30:10Z", "ingest_lag_seconds": 1.0,
               "newest_final_window": "2026-03-01T12:29:00Z"}  # fmt: skip
    assert warnings(settings, f, settled, "") == []
    assert warnings(settings, f, {"server_now": "2026-03-01T12:30:15Z"}, "")[0] == (
        "stale: no events in ClickHouse yet"
    )


def test_feed_urls_default_to_the_local_workers() -> None:
    settings = load_settings(worker_web_port=7000, workers=2, worker_web_host="0.0.0.0")
    assert feed_urls(settings) == ["http://127.0.0.1:7000/stages", "http://127.0.0.1:7001/stages"]
    given = load_settings(dashboard_feed_urls="http://w-0:6066, http://w-1:6066/stages")
    assert feed_urls(given) == ["http://w-0:6066/stages", "http://w-1:6066/stages"]
