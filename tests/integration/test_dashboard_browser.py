"""The live dashboard in a real browser (Debian's headless Chromium through Playwright) during
a simulated run through the real broker, worker and ClickHouse (chDB served over HTTP with a
read-only user, which the dashboard reads as): no console errors, the funnel on the page
equals a ClickHouse query for the same range, it changes on a refresh when more events
arrive, and it follows the channel filter. The screenshot goes to the test's tmp_path and to
test-output/dashboard.png."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.kafka_config import KafkaConfig
from pipeline.producers.kafka import make_producer
from pipeline.producers.simulator import SimulationConfig, simulate
from pipeline.settings import settings_env
from pipeline.testing import free_port
from pipeline.testing.stack import EmbeddedClickHouse, Process, prepare, settings_for_test, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
TOKEN = secrets.token_urlsafe(16)
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed")
playwright = pytest.importorskip("playwright.sync_api")

_SIZES = "SELECT (SELECT count() FROM stage_transitions), (SELECT count() FROM stage_metrics)"
_FUNNEL = """
SELECT stage, sumIf(entries, window_start >= {start:DateTime('UTC')}),
    sumIf(conversions, window_start >= {start:DateTime('UTC')}),
    sumIf(dropoffs, window_start >= {start:DateTime('UTC')}), argMax(in_stage, window_start)
FROM stage_metrics FINAL
WHERE channel = {channel:String} AND segment = 'all' AND window_start < {end:DateTime('UTC')}
GROUP BY stage"""


@pytest.fixture
def stack(kafka_bootstrap: str, tmp_path: Path, start_worker: Any) -> Iterator[Any]:
    """Broker, a ClickHouse server with a read-only user, a worker and the dashboard."""
    password = secrets.token_hex(8)
    users = {"TOUCHPOINT_CLICKHOUSE_USER": "default", "TOUCHPOINT_CLICKHOUSE_READONLY_USER": "reader",
             "TOUCHPOINT_CLICKHOUSE_READONLY_PASSWORD": password}  # fmt: skip
    server = EmbeddedClickHouse(tmp_path / "ch", env={**os.environ, **users}).start()
    settings = settings_for_test(
        kafka_bootstrap, server.url, tmp_path, clickhouse_readonly_password=password,
        dashboard_port=free_port(), dashboard_token=TOKEN, dashboard_refresh_seconds=2,
    )  # fmt: skip
    prepare(settings)
    start_worker(settings)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPOINT_")}
    dashboard = Process(
        [sys.executable, "-m", "pipeline.dashboard"], tmp_path / "dashboard.log",
        {**inherited, **settings_env(settings)},
    ).start()  # fmt: skip
    try:
        wait_for(lambda: _get(settings, "/healthz"), 30, "the dashboard")
        yield settings
    finally:
        dashboard.stop()
        server.stop()


def _get(settings: Any, path: str) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{settings.dashboard_port}{path}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except OSError:
        return None


def _produce(settings: Any, seed: int, start: datetime, minutes: int, customers: int) -> int:
    config = SimulationConfig(
        seed=seed, start=start, duration=timedelta(minutes=minutes), customers=customers,
        max_events=customers * 8, late_fraction=0.0,
    )  # fmt: skip
    producer = make_producer(KafkaConfig.from_settings(settings), client_id="dashboard-test")
    events = list(simulate(config))
    for event in events:
        producer.send(settings.raw_topic, key=event.key, value=event.payload)
    producer.close()
    return len(events)


def _quiet(client: Any, since: float) -> float:
    """Wait until the pipeline's outputs stop changing; return when that was seen."""
    seen: list[Any] = []

    def still() -> bool:
        seen.append(client.query(_SIZES).result_rows[0])
        return len(seen) >= 3 and seen[-1][0] > 0 and len(set(seen[-3:])) == 1

    wait_for(still, 90, "the pipeline to go quiet", interval=1.0)
    return time.time()


def _page_funnel(page: Any) -> dict[str, tuple[int, ...]]:
    rows: dict[str, tuple[int, ...]] = {}
    for tr in page.query_selector_all("#funnel-table tbody tr[data-stage]"):
        cells = [tr.query_selector(f'td[data-field="{f}"]').inner_text() for f in
                 ("entries", "conversions", "dropoffs", "in_stage")]  # fmt: skip
        rows[tr.get_attribute("data-stage")] = tuple(int(c.replace(",", "")) for c in cells)
    return rows


def _refreshed_after(page: Any, moment: float, channel: str = "all") -> dict[str, str]:
    """Wait for a page refresh made after ``moment`` with ``channel``; its range and time."""

    def done() -> dict[str, str] | None:
        status = page.eval_on_selector("#status", "e => ({...e.dataset})")
        made = status.get("generatedAt")
        if not made or status.get("channel") != channel:
            return None
        at = datetime.fromisoformat(made.replace("Z", "+00:00")).timestamp()
        return status if at > moment else None

    return wait_for(done, 30, f"a refresh after {moment:.0f} with channel {channel}", 0.3)


def _clickhouse_funnel(
    client: Any, status: dict[str, str], channel: str
) -> dict[str, tuple[int, ...]]:
    params = {"start": datetime.fromisoformat(status["rangeStart"].replace("Z", "+00:00")),
              "end": datetime.fromisoformat(status["rangeEnd"].replace("Z", "+00:00")),
              "channel": channel}  # fmt: skip
    rows = client.query(_FUNNEL, parameters=params).result_rows
    return {r[0]: tuple(int(v) for v in r[1:]) for r in rows}


def _nonzero(funnel: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {s: v for s, v in funnel.items() if any(v)}


def _same(page: dict[str, tuple[int, ...]], clickhouse: dict[str, tuple[int, ...]]) -> bool:
    """The page lists every stage of the model (zeros where ClickHouse has no row)."""
    return set(clickhouse) <= set(page) and _nonzero(page) == _nonzero(clickhouse)


def test_dashboard_in_a_browser_during_a_simulated_run(stack: Any, tmp_path: Path) -> None:
    settings = stack
    started = time.monotonic()
    reader = connect(ClickHouseConfig.from_settings(settings, readonly=True))
    with pytest.raises(Exception, match=r"164|readonly|READONLY"):
        reader.command("CREATE TABLE not_allowed (x UInt8) ENGINE = Memory")
    now = datetime.now(UTC)
    _produce(settings, seed=11, start=now - timedelta(minutes=50), minutes=40, customers=250)

    errors: list[str] = []
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{settings.dashboard_port}/?token={TOKEN}&range=1h")
        assert "token" not in page.url  # the token became a cookie
        page.wait_for_selector("#status[data-generated-at]", timeout=30_000)

        # 1. once the pipeline is quiet, the page shows what ClickHouse says for its range
        quiet = _quiet(reader, 0)
        status = _refreshed_after(page, quiet)
        first = _page_funnel(page)
        expected = _clickhouse_funnel(reader, status, "all")
        assert _same(first, expected), (first, expected, status)
        assert first["awareness"][0] > 0

        # 2. more events: a refresh shows new numbers, again equal to ClickHouse
        _produce(settings, seed=12, start=datetime.now(UTC) - timedelta(minutes=8), minutes=6,
                 customers=150)  # fmt: skip
        wait_for(lambda: _page_funnel(page) != first, 60, "the funnel to change on a refresh")
        quiet = _quiet(reader, quiet)
        status = _refreshed_after(page, quiet)
        second = _page_funnel(page)
        expected = _clickhouse_funnel(reader, status, "all")
        assert _same(second, expected), (second, expected, status)
        assert _nonzero(second) != _nonzero(first)

        # 3. the channel filter: the numbers follow, equal to the filtered query
        click = time.time()
        page.click('#f-channel button[data-channel="web"]')
        status = _refreshed_after(page, click, "web")
        web = _page_funnel(page)
        expected = _clickhouse_funnel(reader, status, "web")
        assert _same(web, expected), (web, expected, status)
        assert web != second and 0 < web["awareness"][0] < second["awareness"][0]
        assert "channel=web" in page.url

        # every panel drew from ClickHouse (the pain-point ranking may still be computing)
        data = _get(settings, "/api/dashboard?range=1h&channel=web")
        assert set(data["errors"]) <= {"painpoints"}, data["errors"]
        assert data["journey_map"] and data["dropoff_series"] and data["freshness"]["feed"]
        assert page.query_selector(".js-plotly-plot .sankey") is not None
        click = time.time()
        page.click('#f-channel button[data-channel="all"]')  # back to all, for the picture
        _refreshed_after(page, click, "all")
        page.wait_for_timeout(500)
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    stable = ROOT / "test-output" / "dashboard.png"
    stable.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, stable)
    assert errors == [], errors
    slowest = max(data["timings_ms"].items(), key=lambda kv: kv[1])
    print(f"dashboard test: {time.monotonic() - started:.1f}s; slowest query {slowest}")
