"""The dashboard HTTP server: a live page and its JSON API, reading ClickHouse over HTTP
as the read-only user. Run as ``python -m pipeline.dashboard`` (``touchpoint up`` does).
"""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

from aiohttp import web

from pipeline.chclient import ClickHouseConfig, connect
from pipeline.logs import configure_logging
from pipeline.settings import Settings, load_settings

SUMMARY_QUERIES = {
    "totals": "SELECT count() AS events, uniqExact(event_id) AS unique_events, max(ingested_at) AS newest FROM touchpoints",
    "by_channel": "SELECT channel, count() AS events FROM touchpoints GROUP BY channel ORDER BY events DESC",
    "by_type": "SELECT channel, event_type, count() AS events FROM touchpoints GROUP BY channel, event_type ORDER BY events DESC LIMIT 30",
    "dead_letters": "SELECT reason, count() AS messages FROM dead_letters GROUP BY reason ORDER BY messages DESC",
    "freshness": (
        "SELECT quantile(0.5)(dateDiff('millisecond', produced_at, ingested_at)) / 1000 AS p50_seconds, "
        "count() / 60 AS events_per_second FROM touchpoints WHERE ingested_at > now64(3) - INTERVAL 60 SECOND"
    ),
}


def _rows(client: Any, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def summary(client: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: _rows(client, sql) for name, sql in SUMMARY_QUERIES.items()}


def build_dashboard(settings: Settings) -> web.Application:
    cfg = ClickHouseConfig.from_settings(settings, readonly=True)
    lock = asyncio.Lock()
    client: list[Any] = []

    def query_summary() -> dict[str, Any]:
        if not client:
            client.append(connect(cfg))
        return summary(client[0])

    async def api_summary(request: web.Request) -> web.Response:
        async with lock:
            try:
                data = await asyncio.to_thread(query_summary)
            except Exception as exc:
                client.clear()
                return web.json_response({"error": str(exc)}, status=503)
        return web.json_response(data, dumps=_dumps)

    async def index(request: web.Request) -> web.Response:
        page = resources.files("pipeline").joinpath("web", "index.html").read_text("utf-8")
        return web.Response(text=page, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/api/summary", api_summary)
    return app


def _dumps(data: Any) -> str:
    import orjson

    return orjson.dumps(data, default=str).decode()


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    web.run_app(
        build_dashboard(settings),
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        print=None,
    )


if __name__ == "__main__":
    main()
