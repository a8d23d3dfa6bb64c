"""What Grafana does to a panel's SQL before ClickHouse sees it, as pure functions.

The dashboards under ``dashboards/`` are written for the official ClickHouse data source
plugin (``grafana-clickhouse-datasource`` 4.x). Grafana cannot run in the tests, so this
module reproduces, in the same order, the three rewrites a query goes through:

1. **``$__conditionalAll(condition, $var)``** (the plugin, in the browser): the condition,
   or ``1=1`` when ``$var`` has *All* selected (or an empty value).
2. **Template variables** (Grafana's template service with the plugin's formatter):
   ``$var``, ``${var}``, ``${var:format}`` and ``[[var]]``; a multi-value selection becomes
   ``'a','b'`` (the plugin quotes without escaping; ``${var:sqlstring}`` escapes quotes by
   doubling them), *All* becomes the variable's custom ``allValue`` as it is, or else every
   option. Grafana's own ``$__interval``, ``$__interval_ms``, ``$__from``, ``$__to``,
   ``$__range``, ``$__range_s`` and ``$__range_ms`` are replaced here too.
3. **The plugin's backend macros**: ``$__timeFilter(col)`` ->
   ``col >= toDateTime(<from>) AND col <= toDateTime(<to>)`` (Unix seconds),
   ``$__timeFilter_ms(col)``, ``$__dateFilter(col)``, ``$__dateTimeFilter(date, time)``
   (alias ``$__dt``), ``$__fromTime``, ``$__toTime``, ``$__fromTime_ms``, ``$__toTime_ms``,
   ``$__timeInterval(col)`` -> ``toStartOfInterval(toDateTime(col), INTERVAL <n> second)``,
   ``$__timeInterval_ms(col)`` and ``$__interval_s`` (the interval in whole seconds, >= 1).

Also here: Grafana's query interval (``interval_for``: the time range divided by the panel's
max data points, rounded to a "nice" interval, never below the panel's min interval) and
its relative times (``resolve_time``: ``now``, ``now-6h``, ``now-1d/d``).

Unlike Grafana, an unknown variable or macro is an error (:class:`MacroError`), so a typo
in a dashboard fails its test instead of reaching ClickHouse as ``$chanel``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

ALL = "$__all"
"""The value Grafana stores when *All* is selected."""

ALL_TEXT = "All"


class MacroError(ValueError):
    """A query uses a variable, macro, format or argument count Grafana would not accept."""


@dataclass(frozen=True)
class Variable:
    """A dashboard variable: its options (a query variable's result, a custom list) and how
    it may be selected."""

    name: str
    options: tuple[str, ...] = ()
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    """A custom *All* value, inserted as it is (Grafana does not format it)."""


Selection = str | tuple[str, ...]
"""A single value, several values (a multi-value variable), or :data:`ALL`."""


@dataclass(frozen=True)
class QueryContext:
    """Everything a query's expansion depends on: the dashboard's time range, the panel's
    interval, and the variables with their current selection."""

    start: datetime
    end: datetime
    interval: timedelta
    variables: Mapping[str, Variable] = field(default_factory=dict)
    selected: Mapping[str, Selection] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise MacroError("the time range must be timezone-aware")
        if self.end < self.start:
            raise MacroError("the time range ends before it starts")


def expand(sql: str, ctx: QueryContext) -> str:
    """The SQL Grafana and the plugin send to ClickHouse for ``sql`` in ``ctx``."""
    return apply_macros(interpolate_variables(apply_conditional_all(sql, ctx), ctx), ctx)


# --- 1. $__conditionalAll ---------------------------------------------------------------------

_CONDITIONAL_ALL = "$__conditionalAll("
_VAR_REF = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)")


def apply_conditional_all(sql: str, ctx: QueryContext) -> str:
    """Replace each ``$__conditionalAll(condition, $var)``, innermost (last) first."""
    at = sql.rfind(_CONDITIONAL_ALL)
    while at != -1:
        open_paren = at + len(_CONDITIONAL_ALL) - 1
        args, end = _macro_args(sql, open_paren)
        if len(args) != 2:
            raise MacroError(f"$__conditionalAll takes 2 arguments, got {len(args)}: {sql[at:end]}")
        ref = _VAR_REF.search(args[1].strip())
        if ref is None:
            raise MacroError(f"$__conditionalAll needs a variable as its 2nd argument: {args[1]!r}")
        name = ref.group(1) or ref.group(2)
        value = _selection(ctx, name)
        phrase = "1=1" if _is_all(value) or value in ("", ()) else args[0]
        sql = sql[:at] + phrase + sql[end:]
        at = sql.rfind(_CONDITIONAL_ALL)
    return sql


def _macro_args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """The arguments of the call whose ``(`` is at ``open_paren`` (split at its own commas,
    as the plugin does: parentheses nest, quotes are not looked at) and the index after ``)``."""
    depth, start, args = 0, open_paren + 1, []
    for i in range(open_paren, len(sql)):
        char = sql[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i])
                return args, i + 1
        elif char == "," and depth == 1:
            args.append(sql[start:i])
            start = i + 1
    raise MacroError(
        f"unbalanced parentheses after {sql[max(0, open_paren - 30) : open_paren + 1]!r}"
    )


# --- 2. template variables --------------------------------------------------------------------

# Grafana's variable pattern: $name, [[name]] or [[name:format]], ${name} or ${name:format}
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")

_FORMATS = ("raw", "csv", "sqlstring", "singlequote", "doublequote", "pipe", "text", "json")


def interpolate_variables(sql: str, ctx: QueryContext) -> str:
    """Replace dashboard variables and Grafana's global ``$__`` variables. ``$__`` names that
    are not Grafana's (the plugin's macros) are left for :func:`apply_macros`."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(5)
        if name.startswith("__"):
            builtin = _builtin(name, ctx)
            if builtin is None:
                return match.group(0)
            return builtin
        return format_variable(ctx, name, fmt)

    return _VARIABLE.sub(replace, sql)


def format_variable(ctx: QueryContext, name: str, fmt: str | None = None) -> str:
    """The text that replaces ``${name}`` (``fmt`` None: the plugin's own formatter)."""
    variable = ctx.variables.get(name)
    if variable is None:
        raise MacroError(f"undefined dashboard variable ${name}")
    if fmt is not None and fmt not in _FORMATS:
        raise MacroError(f"unsupported variable format {fmt!r} in ${{{name}:{fmt}}}")
    selected = _selection(ctx, name)
    if _is_all(selected):
        if not variable.include_all:
            raise MacroError(f"${name} has All selected but does not include All")
        if fmt == "text":
            return ALL_TEXT
        if variable.all_value is not None:
            return variable.all_value  # a custom All value skips formatting
        if not variable.options:
            raise MacroError(f"${name} has All selected but no options")
        value: str | list[str] = list(variable.options)
    elif isinstance(selected, tuple):
        if not variable.multi:
            raise MacroError(f"${name} is not multi-value but has {len(selected)} values")
        if not selected:
            raise MacroError(f"${name} has an empty selection")
        value = list(selected)
    else:
        value = [selected] if variable.multi else selected
    return _format(value, fmt)


def _format(value: str | list[str], fmt: str | None) -> str:
    values = value if isinstance(value, list) else [value]
    if fmt is None:  # the plugin: arrays quoted and comma-joined, a single value as it is
        return "'" + "','".join(values) + "'" if isinstance(value, list) else value
    if fmt == "sqlstring":
        return ",".join("'" + v.replace("'", "''") + "'" for v in values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "text":
        return " + ".join(values)
    if fmt == "json":
        return json.dumps(value)
    return ",".join(values)  # raw, csv


def _selection(ctx: QueryContext, name: str) -> Selection:
    if name not in ctx.variables:
        raise MacroError(f"undefined dashboard variable ${name}")
    if name not in ctx.selected:
        raise MacroError(f"no value selected for ${name}")
    return ctx.selected[name]


def _is_all(value: Selection) -> bool:
    return value == ALL or (isinstance(value, tuple) and value[:1] == (ALL,))


def _builtin(name: str, ctx: QueryContext) -> str | None:
    """Grafana's global variables (None: not one, e.g. a plugin macro)."""
    interval_ms = _ms(ctx.interval)
    range_ms = _epoch_ms(ctx.end) - _epoch_ms(ctx.start)
    values = {
        "__interval": seconds_to_hms(interval_ms / 1000),
        "__interval_ms": str(interval_ms),
        "__from": str(_epoch_ms(ctx.start)),
        "__to": str(_epoch_ms(ctx.end)),
        "__range": seconds_to_hms(range_ms / 1000),
        "__range_s": str(range_ms // 1000),
        "__range_ms": str(range_ms),
    }
    return values.get(name)


# --- 3. the plugin's macros ---------------------------------------------------------------------

_MACRO = re.compile(r"\$__(\w+)")
_MACRO_ARITY = {
    "fromTime": 0, "toTime": 0, "fromTime_ms": 0, "toTime_ms": 0, "interval_s": 0,
    "timeFilter": 1, "timeFilter_ms": 1, "dateFilter": 1, "timeInterval": 1,
    "timeInterval_ms": 1, "dateTimeFilter": 2, "dt": 2,
}  # fmt: skip
MACROS = frozenset(_MACRO_ARITY)
"""The macros of grafana-clickhouse-datasource's backend (pkg/macros)."""


def apply_macros(sql: str, ctx: QueryContext) -> str:
    """Replace the plugin's backend macros; any other ``$__name`` is an error."""
    out: list[str] = []
    pos = 0
    while (match := _MACRO.search(sql, pos)) is not None:
        name = match.group(1)
        if name not in _MACRO_ARITY:
            raise MacroError(f"unknown macro $__{name}")
        end = match.end()
        args: list[str] = []
        if _MACRO_ARITY[name]:
            if end >= len(sql) or sql[end] != "(":
                raise MacroError(f"$__{name} needs arguments")
            raw, end = _macro_args(sql, end)
            args = [a.strip() for a in raw]
            if len(args) != _MACRO_ARITY[name] or not all(args):
                raise MacroError(
                    f"$__{name} takes {_MACRO_ARITY[name]} argument(s), got {sql[match.start() : end]}"
                )
        out.append(sql[pos : match.start()])
        out.append(_macro(name, args, ctx))
        pos = end
    out.append(sql[pos:])
    return "".join(out)


def _macro(name: str, args: list[str], ctx: QueryContext) -> str:
    start, end = ctx.start, ctx.end
    seconds = int(max(ctx.interval.total_seconds(), 1))
    if name == "fromTime":
        return _datetime(start)
    if name == "toTime":
        return _datetime(end)
    if name == "fromTime_ms":
        return _datetime64(start)
    if name == "toTime_ms":
        return _datetime64(end)
    if name == "interval_s":
        return str(seconds)
    if name == "timeFilter":
        col = args[0]
        return f"{col} >= {_datetime(start)} AND {col} <= {_datetime(end)}"
    if name == "timeFilter_ms":
        col = args[0]
        return f"{col} >= {_datetime64(start)} AND {col} <= {_datetime64(end)}"
    if name == "dateFilter":
        col = args[0]
        return f"{col} >= {_date(start)} AND {col} <= {_date(end)}"
    if name in ("dateTimeFilter", "dt"):
        day, col = args
        return (
            f"({day} >= {_date(start)} AND {day} <= {_date(end)}) AND "
            f"({col} >= {_datetime(start)} AND {col} <= {_datetime(end)})"
        )
    if name == "timeInterval":
        return f"toStartOfInterval(toDateTime({args[0]}), INTERVAL {seconds} second)"
    # timeInterval_ms
    ms = max(_ms(ctx.interval), 1)
    return f"toStartOfInterval(toDateTime64({args[0]}, 3), INTERVAL {ms} millisecond)"


def _datetime(t: datetime) -> str:
    return f"toDateTime({math.floor(t.timestamp())})"


def _datetime64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({_epoch_ms(t)})"


def _date(t: datetime) -> str:
    return f"toDate('{t.astimezone(UTC):%Y-%m-%d}')"


def _epoch_ms(t: datetime) -> int:
    return math.floor(t.timestamp() * 1000)


def _ms(d: timedelta) -> int:
    return d // timedelta(milliseconds=1)


# --- variables used by a query ------------------------------------------------------------------


def variables_in(sql: str) -> set[str]:
    """The dashboard variables ``sql`` refers to (Grafana's and the plugin's ``$__`` names
    are not dashboard variables)."""
    names = set()
    for match in _VARIABLE.finditer(sql):
        name = match.group(1) or match.group(2) or match.group(4)
        if not name.startswith("__"):
            names.add(name)
    return names


def macro_calls(sql: str) -> list[tuple[str, list[str]]]:
    """Every plugin macro in ``sql`` with its arguments, e.g. ``("timeFilter", ["at"])``."""
    calls = []
    for match in _MACRO.finditer(sql):
        name = match.group(1)
        args: list[str] = []
        if _MACRO_ARITY.get(name) and sql[match.end() : match.end() + 1] == "(":
            args = [a.strip() for a in _macro_args(sql, match.end())[0]]
        calls.append((name, args))
    return calls


# --- Grafana's interval and relative time -------------------------------------------------------

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
    ms = round_interval((_epoch_ms(end) - _epoch_ms(start)) / max_data_points)
    low = _ms(parse_duration(min_interval)) if min_interval else 1
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
