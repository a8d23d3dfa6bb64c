"""The live journey dashboard: a page and its JSON API, reading ClickHouse over HTTP as the
read-only user and the workers' live metrics feed. Run as ``python -m pipeline.dashboard``
(``touchpoint up`` does). Works offline: plotly.js is served from the ``plotly`` wheel.

Routes: ``/`` (the page), ``/static/*`` (its script, styles and plotly.js), ``/api/dashboard``
(one snapshot of every panel; query parameters ``range``, ``to``, ``channel``, ``segment``),
``/api/summary`` (plain totals), ``/healthz`` (no authentication). Numbers are defined in
``docs/dashboard.md``; the SQL is in :mod:`pipeline.dashboard_queries`.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import logging
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.dashboard_auth import DashboardAuth, middleware
from pipeline.dashboard_data import DashboardData, LiveFeed, feed_urls
from pipeline.dashboard_queries import parse_filters
from pipeline.errors import TouchpointError
from pipeline.logs import configure_logging
from pipeline.settings import Settings, load_settings
from pipeline.stage_model import load_stage_model

log = logging.getLogger("touchpoint.dashboard")
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
SNAPSHOT_TTL = 1.0
"""Seconds one snapshot serves every request with the same filters (several open pages)."""
DATA = web.AppKey("data", DashboardData)
SETTINGS = web.AppKey("settings", Settings)


@functools.cache
def asset(name: str) -> bytes:
    return resources.files("pipeline").joinpath("web", name).read_bytes()


@functools.cache
def plotly_js() -> tuple[bytes, bytes]:
    """plotly.min.js from the installed ``plotly`` wheel, as is and gzipped (once)."""
    body = resources.files("plotly").joinpath("package_data", "plotly.min.js").read_bytes()
    return body, gzip.compress(body, compresslevel=6)


async def index(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    page = (
        asset("index.html")
        .decode()
        .replace("{{refresh_ms}}", str(int(settings.dashboard_refresh_seconds * 1000)))
    )
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "plotly.min.js":
        plain, packed = await asyncio.to_thread(plotly_js)
        headers = {"Cache-Control": "max-age=86400", "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            plain = packed
        return web.Response(body=plain, content_type="text/javascript", headers=headers)
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(
        body=asset(name), content_type=ASSETS[name], headers={"Cache-Control": "no-cache"}
    )


class Snapshots:
    """One snapshot at a time; a request arriving with the same filters within SNAPSHOT_TTL
    gets the one just made."""

    def __init__(self, data: DashboardData) -> None:
        self.data = data
        self.lock = asyncio.Lock()
        self.last: tuple[float, Any, dict[str, Any]] | None = None

    async def get(self, filters: Any) -> dict[str, Any]:
        async with self.lock:
            loop = asyncio.get_running_loop()
            if self.last and self.last[1] == filters and loop.time() - self.last[0] < SNAPSHOT_TTL:
                return self.last[2]
            value = await asyncio.to_thread(self.data.snapshot, filters)
            self.last = (loop.time(), filters, value)
            return value


async def api_dashboard(request: web.Request) -> web.Response:
    try:
        filters = parse_filters(request.query, datetime.now(UTC))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    snapshot = await request.app[SNAPSHOTS].get(filters)
    status = 503 if snapshot["unreachable"] else 200
    return web.json_response(snapshot, status=status, headers={"Cache-Control": "no-store"})


async def api_summary(request: web.Request) -> web.Response:
    data = request.app[DATA]
    async with request.app[SNAPSHOTS].lock:
        try:
            summary = await asyncio.to_thread(data.summary)
        except Exception as exc:
            return web.json_response({"error": str(exc).splitlines()[0]}, status=503)
    return web.json_response(summary)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


SNAPSHOTS = web.AppKey("snapshots", Snapshots)


def build_dashboard(settings: Settings, *, auth: DashboardAuth | None = None) -> web.Application:
    """The dashboard application (auth from the settings unless given)."""
    auth = auth or DashboardAuth.from_settings(settings)
    cfg = ClickHouseConfig.from_settings(settings, readonly=True)
    stages = load_stage_model(settings.stage_model_path).stages
    data = DashboardData(lambda: connect(cfg), stages, LiveFeed(feed_urls(settings)), settings)
    app = web.Application(middlewares=[middleware(auth)])
    app[SETTINGS] = settings
    app[DATA] = data
    app[SNAPSHOTS] = Snapshots(data)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/dashboard", api_dashboard)
    app.router.add_get("/api/summary", api_summary)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        auth = DashboardAuth.from_settings(settings)
    except TouchpointError as exc:
        raise SystemExit(f"dashboard: {exc}") from exc
    if not auth.enabled and settings.dashboard_host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "the dashboard listens on %s without authentication: set "
            "TOUCHPOINT_DASHBOARD_TOKEN or TOUCHPOINT_DASHBOARD_USER/_PASSWORD",
            settings.dashboard_host,
        )
    web.run_app(
        build_dashboard(settings, auth=auth),
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        print=None,
    )


if __name__ == "__main__":
    main()
