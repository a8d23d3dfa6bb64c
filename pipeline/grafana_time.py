"""Grafana's time arithmetic, as pure functions: its query interval (:func:`interval_for`:
the time range divided by the panel's max data points, rounded to a "nice" interval, never
below the panel's min interval), durations as Grafana writes them (``1m``, ``>10s``), its
relative times (:func:`resolve_time`: ``now``, ``now-6h``, ``now-1d/d``), and the options
of query and custom variables. Used by :mod:`pipeline.grafana_macros`."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta


class MacroError(ValueError):
    """A query uses a variable, macro, format or argument count Grafana would not accept."""


def epoch_ms(t: datetime) -> int:
    return math.floor(t.timestamp() * 1000)


def ms_of(d: timedelta) -> int:
    return d // timedelta(milliseconds=1)


_UNIT_MS = {
    "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
    "M": 2_592_000_000, "y": 31_536_000_000,
}  # fmt: skip
_DURATION = re.compile(r"^\s*>?\s*(\d+(?:\.\d+)?)(ms|s|m|h|d|w|M|y)\s*$")

# Grafana's rangeutil.roundInterval: (below this many ms, use this interval)
_ROUNDING = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1_500, 1_000),
    (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000), (25_000, 20_000),
    (45_000, 30_000), (90_000, 60_000), (210_000, 120_000), (450_000, 300_000),
    (750_000, 600_000), (1_050_000, 900_000), (1_500_000, 1_200_000), (2_700_000, 1_800_000),
    (5_400_000, 3_600_000), (9_000_000, 7_200_000), (16_200_000, 10_800_000),
    (32_400_000, 21_600_000), (86_400_000, 43_200_000), (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000), (3_628_800_000, 2_592_000_000),
)  # fmt: skip


def parse_duration(text: str) -> timedelta:
    """A Grafana interval such as ``30s``, ``1m``, ``>1m`` or ``2h``."""
    match = _DURATION.match(text)
    if match is None:
        raise MacroError(f"not a Grafana interval: {text!r}")
    return timedelta(milliseconds=float(match.group(1)) * _UNIT_MS[match.group(2)])


def round_interval(ms: float) -> int:
    """Grafana's rounding of a raw interval to a "nice" one, in ms."""
    for below, rounded in _ROUNDING:
        if ms < below:
            return rounded
    return 31_536_000_000


def interval_for(
    start: datetime, end: datetime, max_data_points: int = 1000, min_interval: str | None = None
) -> timedelta:
    """The ``$__interval`` Grafana gives a panel: the range over its max data points, rounded,
    and at least its min interval (the panel's ``interval``, e.g. ``1m``)."""
    if max_data_points < 1:
        raise MacroError("max data points must be at least 1")
    ms = round_interval((epoch_ms(end) - epoch_ms(start)) / max_data_points)
    low = ms_of(parse_duration(min_interval)) if min_interval else 1
    return timedelta(milliseconds=max(ms, low))


def seconds_to_hms(seconds: float) -> str:
    """Grafana's rendering of an interval: its largest whole unit (``90`` -> ``1m``)."""
    year = seconds % 31_536_000
    parts = (
        (seconds / 31_536_000, "y"), (year / 86_400, "d"), ((year % 86_400) / 3_600, "h"),
        ((year % 86_400 % 3_600) / 60, "m"), (year % 86_400 % 3_600 % 60, "s"),
    )  # fmt: skip
    for amount, unit in parts:
        if math.floor(amount):
            return f"{math.floor(amount)}{unit}"
    ms = math.floor(seconds * 1000)
    return f"{ms}ms" if ms else "less than a millisecond"


_RELATIVE = re.compile(r"([+-])(\d+)(s|m|h|d|w)|/(s|m|h|d)")
_ROUND_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def resolve_time(expression: str, now: datetime, round_up: bool = False) -> datetime:
    """A Grafana time (``now``, ``now-6h``, ``now-1d/d``, or an ISO timestamp) at ``now``;
    ``round_up`` for the end of a range (``/d`` then means the end of the day)."""
    if not expression.startswith("now"):
        try:
            parsed = datetime.fromisoformat(expression)
        except ValueError as exc:
            raise MacroError(f"not a Grafana time: {expression!r}") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    t = now.astimezone(UTC)
    rest = expression[3:]
    pos = 0
    while pos < len(rest):
        match = _RELATIVE.match(rest, pos)
        if match is None:
            raise MacroError(f"unsupported relative time: {expression!r}")
        if match.group(4):
            size = _ROUND_SECONDS[match.group(4)]
            floor = math.floor(t.timestamp() / size) * size
            t = datetime.fromtimestamp(floor, UTC)
            if round_up:
                t += timedelta(seconds=size) - timedelta(milliseconds=1)
        else:
            amount = int(match.group(2)) * _UNIT_MS[match.group(3)]
            t += timedelta(milliseconds=amount if match.group(1) == "+" else -amount)
        pos = match.end()
    return t


def options_from_rows(rows: Iterable[tuple[object, ...]]) -> tuple[str, ...]:
    """A query variable's options from its query's rows, as the plugin reads them: the only
    column, or the first (the value) of two."""
    return tuple(str(row[0]) for row in rows)


_CUSTOM_ITEM = re.compile(r"(?:\\,|[^,])+")
_CUSTOM_PAIR = re.compile(r"^\s*(.+)\s:\s(.+)$")


def custom_options(query: str) -> tuple[tuple[str, str], ...]:
    """A custom variable's options ``(text, value)`` from its query, as Grafana reads it:
    comma-separated (``\\,`` escapes a comma), each ``value`` or ``text : value``."""
    options = []
    for item in _CUSTOM_ITEM.findall(query):
        item = item.replace("\\,", ",")
        pair = _CUSTOM_PAIR.match(item)
        if pair is not None:
            options.append((pair.group(1).strip(), pair.group(2).strip()))
        else:
            options.append((item.strip(), item.strip()))
    return tuple(options)
