"""The dashboard's HTTP side without ClickHouse: access control (token, basic auth, the
session cookie), security headers, assets served offline (plotly.js from the wheel), bad
filters, and a ClickHouse that does not answer."""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.dashboard import build_dashboard
from pipeline.dashboard_auth import COOKIE, DashboardAuth
from pipeline.errors import ConfigError
from pipeline.settings import load_settings
from pipeline.testing import free_port

TOKEN = "s3cret-token"


def _settings(**over: Any) -> Any:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: ClickHouse is down
    return load_settings(clickhouse_url=dead, dashboard_feed_urls=dead, **over)


def _run(settings: Any, body: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(build_dashboard(settings))) as client:
            await body(client)

    asyncio.run(main())


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_token_guards_everything_but_healthz() -> None:
    async def body(client: TestClient[Any, Any]) -> None:
        for path in ("/", "/api/dashboard", "/api/summary", "/static/dashboard.js"):
            resp = await client.get(path)
            assert resp.status == 401, path
            assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        assert (await client.get("/healthz")).status == 200
        wrong = await client.get("/", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        ok = await client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200 and "touchpoint" in await ok.text()
        assert "script-src 'self'" in ok.headers["Content-Security-Policy"]
        assert ok.headers["X-Frame-Options"] == "DENY"

    _run(_settings(dashboard_token=TOKEN), body)


def test_token_in_the_address_sets_a_cookie_and_is_dropped() -> None:
    async def body(client: TestClient[Any, Any]) -> None:
        resp = await client.get(f"/?token={TOKEN}&range=3h", allow_redirects=False)
        assert resp.status == 303
        assert resp.headers["Location"] == "/?range=3h"
        cookie = resp.cookies[COOKIE]
        assert cookie.value != TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
        again = await client.get("/?range=3h")  # the client jar sends the cookie back
        assert again.status == 200
        client.session.cookie_jar.clear()
        assert (await client.get("/?token=wrong")).status == 401

    _run(_settings(dashboard_token=TOKEN), body)


def test_basic_auth() -> None:
    async def body(client: TestClient[Any, Any]) -> None:
        resp = await client.get("/")
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith('Basic realm="touchpoint dashboard"')
        assert (await client.get("/", headers=_basic("ops", "wrong"))).status == 401
        assert (await client.get("/", headers={"Authorization": "Basic !!"})).status == 401
        assert (await client.get("/", headers=_basic("ops", "pw:with:colons"))).status == 200

    _run(_settings(dashboard_user="ops", dashboard_password="pw:with:colons"), body)


def test_auth_settings_must_be_complete() -> None:
    with pytest.raises(ConfigError, match="go together"):
        DashboardAuth.from_settings(load_settings(dashboard_user="ops"))
    with pytest.raises(ConfigError, match="empty"):
        DashboardAuth.from_settings(load_settings(dashboard_token=" "))
    assert not DashboardAuth.from_settings(load_settings()).enabled


def test_page_and_assets_are_served_offline() -> None:
    async def body(client: TestClient[Any, Any]) -> None:
        page = await (await client.get("/")).text()
        assert 'src="static/plotly.min.js"' in page and 'data-refresh-ms="2000"' in page
        assert "http://" not in page and "https://" not in page  # no CDN
        resp = await client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/javascript")
        raw = await client.get("/static/plotly.min.js", auto_decompress=False)
        assert raw.headers.get("Content-Encoding") == "gzip"
        assert b"plotly.js v" in gzip.decompress(await raw.read())[:200]
        assert (await client.get("/static/dashboard.css")).status == 200
        assert (await client.get("/static/index.html")).status == 404
        assert (await client.get("/static/..%2Fdashboard.py")).status == 404

    _run(_settings(dashboard_refresh_seconds=2), body)


def test_bad_filters_are_400_and_a_dead_clickhouse_is_503() -> None:
    async def body(client: TestClient[Any, Any]) -> None:
        bad = await client.get("/api/dashboard?channel=fax")
        assert bad.status == 400 and "channel" in (await bad.json())["error"]
        down = await client.get("/api/dashboard?range=15m")
        data = await down.json()
        assert down.status == 503 and data["unreachable"]
        assert data["funnel"][0]["stage"] == "awareness" and data["funnel"][0]["entries"] == 0
        assert data["freshness"]["feed"] is None and "funnel" in data["errors"]
        assert (await client.get("/api/summary")).status == 503

    _run(_settings(), body)
