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

Grafana's query interval and relative times are in :mod:`pipeline.grafana_time` (its
functions are importable from here too).

Unlike Grafana, an unknown variable or macro is an error (:class:`MacroError`), so a typo
in a dashboard fails its test instead of reaching ClickHouse as ``$chanel``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pipeline.grafana_time import MacroError as MacroError
from pipeline.grafana_time import custom_options as custom_options
from pipeline.grafana_time import epoch_ms, ms_of
from pipeline.grafana_time import interval_for as interval_for
from pipeline.grafana_time import options_from_rows as options_from_rows
from pipeline.grafana_time import parse_duration as parse_duration
from pipeline.grafana_time import resolve_time as resolve_time
from pipeline.grafana_time import round_interval as round_interval
from pipeline.grafana_time import seconds_to_hms as seconds_to_hms

ALL = "$__all"
"""The value Grafana stores when *All* is selected."""

ALL_TEXT = "All"


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
    interval_ms = ms_of(ctx.interval)
    range_ms = epoch_ms(ctx.end) - epoch_ms(ctx.start)
    values = {
        "__interval": seconds_to_hms(interval_ms / 1000),
        "__interval_ms": str(interval_ms),
        "__from": str(epoch_ms(ctx.start)),
        "__to": str(epoch_ms(ctx.end)),
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
    ms = max(ms_of(ctx.interval), 1)
    return f"toStartOfInterval(toDateTime64({args[0]}, 3), INTERVAL {ms} millisecond)"


def _datetime(t: datetime) -> str:
    return f"toDateTime({math.floor(t.timestamp())})"


def _datetime64(t: datetime) -> str:
    return f"fromUnixTimestamp64Milli({epoch_ms(t)})"


def _date(t: datetime) -> str:
    return f"toDate('{t.astimezone(UTC):%Y-%m-%d}')"


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
