"""One dashboard snapshot: every panel's rows from ClickHouse (as the read-only user), the
detector statuses from the workers' live feed (``GET /stages``), and the warnings.

Runs in a worker thread (the queries are blocking); one ClickHouse client, one query at a
time. A panel whose query fails carries the error instead of rows; the others still show.
"""

from __future__ import annotations

import importlib
import json
import math
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline import dashboard_queries as dq
from pipeline.dashboard_queries import Filters, Query
from pipeline.settings import Settings
from schemas import CHANNELS

FEED_TTL = 2.0
SLOW_TTL = 120.0
"""Seconds the pain-point ranking is reused (a heavy query over all history)."""

SUMMARY_QUERIES = {
    "totals": "SELECT count() AS events, uniqExact(event_id) AS unique_events, max(ingested_at) AS newest FROM touchpoints",
    "by_channel": "SELECT channel, count() AS events FROM touchpoints GROUP BY channel ORDER BY events DESC",
    "dead_letters": "SELECT reason, count() AS messages FROM dead_letters GROUP BY reason ORDER BY messages DESC",
}
"""The plain totals of ``GET /api/summary`` (scripts and ``touchpoint up``'s test read it)."""


def jsonable(value: Any) -> Any:
    """ClickHouse values as JSON: naive datetimes are UTC, NaN and infinities are null."""
    if isinstance(value, datetime):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def feed_urls(settings: Settings) -> list[str]:
    """Where the live feed is: ``dashboard_feed_urls``, else this machine's workers."""
    if settings.dashboard_feed_urls and settings.dashboard_feed_urls.strip():
        bases = [u.strip() for u in settings.dashboard_feed_urls.split(",") if u.strip()]
    else:
        host, port = settings.worker_web_host, settings.worker_web_port
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        bases = [f"http://{host}:{port + i}" for i in range(settings.workers)]
    return [
        b.rstrip("/") + "/stages" if not b.rstrip("/").endswith("/stages") else b for b in bases
    ]


class LiveFeed:
    """The metrics owner's ``/stages`` (statuses, clocks), asked at most every FEED_TTL s."""

    def __init__(self, urls: list[str], timeout: float = 1.0) -> None:
        self.urls, self.timeout = urls, timeout
        self._at = -FEED_TTL
        self._value: dict[str, Any] | None = None
        self._error = "not asked yet"

    def get(self) -> tuple[dict[str, Any] | None, str]:
        if time.monotonic() - self._at < FEED_TTL:
            return self._value, self._error
        self._value, self._error = None, "no worker owns the metrics partition"
        for url in self.urls:
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as response:
                    body = json.loads(response.read())
            except (OSError, ValueError) as exc:
                self._error = f"{url}: {exc}"
                continue
            if body.get("owner"):
                self._value, self._error = body, ""
                break
        self._at = time.monotonic()
        return self._value, self._error


class Painpoints:
    """The pain-point ranking (``pipeline.painpoints``), a heavy query over all history: run
    in its own thread on its own client at most every SLOW_TTL seconds; a snapshot takes the
    last ranking made and never waits for it."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self.connect = connect
        self.value: dict[str, Any] = {"rows": [], "computed_at": None}
        self.error = ""
        self.timings: dict[str, float] = {}
        self._at = -SLOW_TTL
        self._running = threading.Lock()

    def get(self) -> tuple[dict[str, Any], str]:
        if time.monotonic() - self._at >= SLOW_TTL and self._running.acquire(blocking=False):
            self._at = time.monotonic()
            threading.Thread(target=self._compute, name="painpoints", daemon=True).start()
        error = self.error or ("" if self.value["computed_at"] else "the ranking is being computed")
        return self.value, error

    def _compute(self) -> None:
        try:
            started = time.perf_counter()
            module = importlib.import_module("pipeline.painpoints")
            client = self.connect()
            try:
                rows = module.painpoints_feed(client, limit=10)
            finally:
                client.close()
            self.timings["painpoints"] = round((time.perf_counter() - started) * 1000, 1)
            self.value = {
                "rows": [{k: jsonable(v) for k, v in row.items()} for row in rows],
                "computed_at": jsonable(datetime.now(UTC)),
            }
            self.error = ""
        except Exception as exc:  # shown on the panel; tried again after SLOW_TTL
            self.error = _first_line(exc)
        finally:
            self._running.release()


class DashboardData:
    """Runs the snapshot's queries on one client (``connect`` makes it, again after an error)."""

    def __init__(self, connect: Callable[[], Any], stages: tuple[str, ...], feed: LiveFeed,
                 settings: Settings) -> None:  # fmt: skip
        self.connect, self.stages, self.feed, self.settings = connect, stages, feed, settings
        self.lock = threading.Lock()
        self.client: Any = None
        self.timings: dict[str, float] = {}
        self.painpoints = Painpoints(connect)

    def rows(self, query: Query) -> list[dict[str, Any]]:
        if self.client is None:
            self.client = self.connect()
        started = time.perf_counter()
        try:
            result = self.client.query(query.sql, parameters=query.params)
        except Exception:
            self.client = None  # reconnect next time (the server may have restarted)
            raise
        finally:
            self.timings[query.name] = round((time.perf_counter() - started) * 1000, 1)
        names = result.column_names
        return [
            {n: jsonable(v) for n, v in zip(names, row, strict=True)} for row in result.result_rows
        ]

    def summary(self) -> dict[str, list[dict[str, Any]]]:
        with self.lock:
            return {name: self.rows(Query(name, sql, {})) for name, sql in SUMMARY_QUERIES.items()}

    def snapshot(self, f: Filters) -> dict[str, Any]:
        with self.lock:
            self.timings = {}
            errors: dict[str, str] = {}
            got: dict[str, Any] = {}
            queries = [*(build(f) for build in dq.PANELS), dq.freshness(f), dq.segments()]
            for query in queries:
                try:
                    got[query.name] = self.rows(query)
                except Exception as exc:
                    errors[query.name] = _first_line(exc)
            got["painpoints"], error = self.painpoints.get()
            if error:
                errors["painpoints"] = error
            if "painpoints" in self.painpoints.timings:
                self.timings["painpoints"] = self.painpoints.timings["painpoints"]
            feed, feed_error = self.feed.get()
            snapshot = assemble(self, f, got, errors, feed, feed_error)
            snapshot["unreachable"] = all(q.name in errors for q in queries)
            return snapshot


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _stage_order(known: tuple[str, ...], rows: list[dict[str, Any]]) -> list[str]:
    extra = sorted({r["stage"] for r in rows if r["stage"] not in known})
    return [*known, *extra]


def detector(statuses: list[dict[str, Any]], alerts: list[dict[str, Any]], stage: str,
             channel: str) -> dict[str, Any] | None:  # fmt: skip
    """The detector's last word on (stage, channel): its live status, else its last alert."""
    status = next((s for s in statuses if (s["stage"], s["channel"]) == (stage, channel)), None)
    source = "live feed"
    if status is None:
        status = next((a for a in alerts if (a["stage"], a["channel"]) == (stage, channel)), None)
        source = "last alert"
        if status is None:
            return None
        status = {**status, "firing": status["state"] == "fired", "suppressed": ""}
    rate, base = status.get("dropoff_rate"), status.get("baseline_rate")
    change = rate - base if rate is not None and base is not None else None
    relative = rate / base - 1 if change is not None and base else None
    return {
        "source": source, "window_start": status.get("window_start"), "dropoff_rate": rate,
        "baseline_rate": base, "change": change, "relative_change": relative,
        "zscore": status.get("zscore"), "firing": bool(status.get("firing")),
        "suppressed": status.get("suppressed") or "",
    }  # fmt: skip


def assemble(data: DashboardData, f: Filters, got: dict[str, Any], errors: dict[str, str],
             feed: dict[str, Any] | None, feed_error: str) -> dict[str, Any]:  # fmt: skip
    """The JSON the page draws, in the stage model's order."""
    funnel_rows = {r["stage"]: r for r in got.get("funnel", [])}
    stages = _stage_order(data.stages, list(funnel_rows.values()))
    statuses = feed["statuses"] if feed else []
    recent = got.get("recent_alerts", [])
    zero = {"entries": 0, "conversions": 0, "dropoffs": 0, "conversion_rate": None,
            "dropoff_rate": None, "in_stage": 0, "late_events": 0, "provisional_windows": 0}  # fmt: skip
    funnel = [
        {**zero, **funnel_rows.get(s, {}), "stage": s,
         "detector": detector(statuses, recent, s, f.channel or "all")}
        for s in stages
    ]  # fmt: skip
    fresh = (got.get("freshness") or [{}])[0]
    fresh["feed"], fresh["feed_error"] = _feed_clocks(feed), feed_error
    fresh["warnings"] = warnings(data.settings, f, fresh, feed_error)
    dead = got.get("dead_letters", [])
    segments = ["all", *(r["segment"] for r in got.get("segments", []))]
    span = {"start": jsonable(f.start), "end": jsonable(f.end), "seconds": f.seconds}
    return {
        "generated_at": jsonable(datetime.now(UTC)),
        "filters": {"range": f.range_name, "channel": f.channel, "segment": f.segment},
        "range": {**span, "step": f.step},
        "stages": stages,
        "funnel": funnel,
        "dropoff_series": got.get("dropoff_series", []),
        "alerts_in_range": got.get("alerts_in_range", []),
        "recent_alerts": recent,
        "journey_map": got.get("journey_map", []),
        "channel_mix": got.get("channel_mix", []),
        "segment_mix": got.get("segment_mix", []),
        "experience": got.get("experience", []),
        "painpoints": got.get("painpoints", {"rows": []}),
        "dead_letters": {"total": dead[0]["total"] if dead else 0, "reasons": dead},
        "freshness": fresh,
        "options": {"channels": ["all", *CHANNELS], "segments": segments},
        "errors": errors,
        "timings_ms": dict(data.timings),
    }


def _feed_clocks(feed: dict[str, Any] | None) -> dict[str, Any] | None:
    if not feed:
        return None
    keys = ("newest_event_at", "complete_until", "final_until")
    return {k: feed.get(k) for k in keys} | {"firing": sum(s["firing"] for s in feed["statuses"])}


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _age(now: Any, then: Any) -> float | None:
    if not now or not then:
        return None
    return (_parse(now) - _parse(then)).total_seconds()


def warnings(settings: Settings, f: Filters, fresh: dict[str, Any], feed_error: str) -> list[str]:
    """What the reader must know before trusting the numbers: stale data, provisional windows."""
    found: list[str] = []
    now, stale = fresh.get("server_now"), settings.dashboard_stale_seconds
    ingested = _age(now, fresh.get("newest_ingested_at"))
    if fresh and ingested is None:
        found.append("stale: no events in ClickHouse yet")
    elif ingested is not None and ingested > stale:
        found.append(f"stale: no new events for {ingested:.0f} s")
    written = _age(now, fresh.get("metrics_written_at"))
    if written is not None and written > stale:
        found.append(f"stale: stage metrics not updated for {written:.0f} s")
    lag = fresh.get("ingest_lag_seconds")
    if lag is not None and lag > settings.alert_max_ingest_lag:
        found.append(f"ingest lag {lag:.0f} s: the detector takes no decisions")
    final = fresh.get("newest_final_window")
    final_end = _parse(final) + timedelta(minutes=1) if final else None
    if final_end is None or f.end > final_end:
        since = final_end.isoformat().replace("+00:00", "Z") if final_end else "the start"
        found.append(
            f"provisional: windows from {since} on are not final yet; their counts may change"
        )
    if feed_error:
        found.append(f"live feed unavailable ({feed_error}): detector baselines from alerts only")
    return found
