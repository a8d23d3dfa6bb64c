"""Grafana's and the ClickHouse plugin's query interpolation (pipeline/grafana_macros.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.grafana_macros import (
    ALL,
    MacroError,
    QueryContext,
    Variable,
    apply_conditional_all,
    custom_options,
    expand,
    format_variable,
    interpolate_variables,
    interval_for,
    macro_calls,
    options_from_rows,
    parse_duration,
    resolve_time,
    round_interval,
    seconds_to_hms,
    variables_in,
)

START = datetime(2026, 11, 26, 6, 0, 0, 250_000, tzinfo=UTC)  # 1795672800.25
END = datetime(2026, 11, 26, 12, 0, 0, 999_000, tzinfo=UTC)  # 1795694400.999
FROM_S, TO_S = 1795672800, 1795694400

CHANNELS = ("call_center", "chat", "email", "web")
VARIABLES = {
    "channel": Variable("channel", CHANNELS, multi=True, include_all=True),
    "rollup": Variable("rollup", CHANNELS, multi=True, include_all=True, all_value="'all'"),
    "segment": Variable("segment", ("family", "o'neil"), multi=True, include_all=True),
    "model": Variable("model", ("first_touch", "linear")),
}


def ctx(interval: timedelta = timedelta(minutes=1), **selected: object) -> QueryContext:
    chosen = {"channel": (ALL,), "rollup": (ALL,), "segment": (ALL,), "model": "linear"}
    chosen.update(selected)  # type: ignore[arg-type]
    return QueryContext(START, END, interval, VARIABLES, chosen)  # type: ignore[arg-type]


# --- the plugin's backend macros ------------------------------------------------------------------


def test_time_filter_and_range_macros() -> None:
    c = ctx()
    assert expand("WHERE $__timeFilter(occurred_at)", c) == (
        f"WHERE occurred_at >= toDateTime({FROM_S}) AND occurred_at <= toDateTime({TO_S})"
    )
    assert expand("$__fromTime, $__toTime", c) == f"toDateTime({FROM_S}), toDateTime({TO_S})"
    assert expand("$__fromTime_ms/$__toTime_ms", c) == (
        "fromUnixTimestamp64Milli(1795672800250)/fromUnixTimestamp64Milli(1795694400999)"
    )
    assert expand("$__timeFilter_ms( m.at )", c) == (
        "m.at >= fromUnixTimestamp64Milli(1795672800250) AND m.at <= fromUnixTimestamp64Milli(1795694400999)"
    )
    assert (
        expand("$__dateFilter(day)", c)
        == "day >= toDate('2026-11-26') AND day <= toDate('2026-11-26')"
    )
    both = "(d >= toDate('2026-11-26') AND d <= toDate('2026-11-26')) AND "
    both += f"(t >= toDateTime({FROM_S}) AND t <= toDateTime({TO_S}))"
    assert expand("$__dateTimeFilter(d, t)", c) == both
    assert expand("$__dt(d,t)", c) == both


def test_interval_macros() -> None:
    assert expand("$__timeInterval(window_start)", ctx()) == (
        "toStartOfInterval(toDateTime(window_start), INTERVAL 60 second)"
    )
    assert expand("STEP $__interval_s", ctx(timedelta(minutes=30))) == "STEP 1800"
    # never below one second, fractions of a second cut off
    assert expand("$__interval_s", ctx(timedelta(milliseconds=200))) == "1"
    assert expand("$__timeInterval(t)", ctx(timedelta(seconds=2.7))) == (
        "toStartOfInterval(toDateTime(t), INTERVAL 2 second)"
    )
    assert expand("$__timeInterval_ms(t)", ctx(timedelta(milliseconds=200))) == (
        "toStartOfInterval(toDateTime64(t, 3), INTERVAL 200 millisecond)"
    )


def test_macro_arguments_nest_and_unknown_or_malformed_macros_are_errors() -> None:
    assert expand("$__timeFilter(toDateTime(at))", ctx()).startswith(
        "toDateTime(at) >= toDateTime("
    )
    with pytest.raises(MacroError, match="unknown macro"):
        expand("$__timeGroup(at, '1m')", ctx())
    with pytest.raises(MacroError, match="takes 1 argument"):
        expand("$__timeFilter(a, b)", ctx())
    with pytest.raises(MacroError, match="takes 1 argument"):
        expand("$__timeFilter()", ctx())
    with pytest.raises(MacroError, match="needs arguments"):
        expand("WHERE $__timeFilter", ctx())
    with pytest.raises(MacroError, match="unbalanced"):
        expand("$__timeFilter(at", ctx())


# --- $__conditionalAll ----------------------------------------------------------------------------


def test_conditional_all_is_true_for_all_and_the_condition_otherwise() -> None:
    sql = "WHERE $__conditionalAll(channel IN ($channel), $channel) AND x = 1"
    assert expand(sql, ctx()) == "WHERE 1=1 AND x = 1"
    assert (
        expand(sql, ctx(channel=("web", "email"))) == "WHERE channel IN ('web','email') AND x = 1"
    )
    assert apply_conditional_all("$__conditionalAll(a = 1, ${model})", ctx(model="")) == "1=1"
    # nested calls and a subquery with commas inside the condition
    nested = (
        "$__conditionalAll(id IN (SELECT id FROM c WHERE if(s = '', 'unknown', s) IN "
        "(${segment:sqlstring})), $segment) AND $__conditionalAll(channel IN ($channel), $channel)"
    )
    assert expand(nested, ctx(segment=("o'neil",), channel=(ALL,))) == (
        "id IN (SELECT id FROM c WHERE if(s = '', 'unknown', s) IN ('o''neil')) AND 1=1"
    )
    with pytest.raises(MacroError, match="2 arguments"):
        expand("$__conditionalAll(a = 1)", ctx())
    with pytest.raises(MacroError, match="undefined"):
        expand("$__conditionalAll(a = 1, $nope)", ctx())


# --- template variables ---------------------------------------------------------------------------


def test_multi_value_and_all_selections_in_in_lists() -> None:
    assert (
        expand("channel IN ($channel)", ctx(channel=("web", "email")))
        == "channel IN ('web','email')"
    )
    assert expand("channel IN ($channel)", ctx(channel="web")) == "channel IN ('web')"
    assert expand("channel IN (${channel})", ctx(channel=(ALL,))) == (
        "channel IN ('call_center','chat','email','web')"
    )
    assert expand("channel IN ($channel)", ctx(channel=ALL)) == (
        "channel IN ('call_center','chat','email','web')"
    )
    # a custom All value is inserted as it is, whatever the format
    assert expand("channel IN (${rollup:sqlstring})", ctx()) == "channel IN ('all')"
    assert expand("channel IN (${rollup:sqlstring})", ctx(rollup=("web",))) == "channel IN ('web')"
    # a single-valued variable is raw: usable as an identifier or inside quotes
    assert expand("sum(${model} * revenue) WHERE m = '$model'", ctx()) == (
        "sum(linear * revenue) WHERE m = 'linear'"
    )


def test_variable_formats() -> None:
    c = ctx(segment=("family", "o'neil"))
    assert format_variable(c, "segment", "sqlstring") == "'family','o''neil'"
    assert format_variable(c, "segment", "singlequote") == "'family','o\\'neil'"
    assert format_variable(c, "segment", "doublequote") == '"family","o\'neil"'
    assert format_variable(c, "segment", "csv") == "family,o'neil"
    assert format_variable(c, "segment", "pipe") == "family|o'neil"
    assert format_variable(c, "segment", "json") == '["family", "o\'neil"]'
    assert format_variable(c, "segment", "text") == "family + o'neil"
    assert format_variable(ctx(), "segment", "text") == "All"
    assert interpolate_variables("[[segment]] [[model:raw]]", c) == "'family','o'neil' linear"
    with pytest.raises(MacroError, match="unsupported variable format"):
        format_variable(c, "segment", "lucene")


def test_grafana_global_variables() -> None:
    sql = "$__interval $__interval_ms $__from $__to $__range_s $__range"
    assert interpolate_variables(sql, ctx()) == "1m 60000 1795672800250 1795694400999 21600 6h"
    # the plugin's macros are left for the backend step
    assert (
        interpolate_variables("$__timeFilter(t) $__interval_s", ctx())
        == "$__timeFilter(t) $__interval_s"
    )


def test_undefined_or_misused_variables_are_errors() -> None:
    with pytest.raises(MacroError, match=r"undefined dashboard variable \$chanel"):
        expand("channel IN ($chanel)", ctx())
    with pytest.raises(MacroError, match="not multi-value"):
        expand("$model", ctx(model=("linear", "first_touch")))
    with pytest.raises(MacroError, match="does not include All"):
        expand("$model", ctx(model=ALL))
    with pytest.raises(MacroError, match="empty selection"):
        expand("$channel", ctx(channel=()))
    with pytest.raises(MacroError, match="no value selected"):
        expand("$channel", QueryContext(START, END, timedelta(minutes=1), VARIABLES, {}))
    with pytest.raises(MacroError, match="timezone-aware"):
        QueryContext(START.replace(tzinfo=None), END, timedelta(minutes=1))


def test_a_dashboard_query_expands_to_what_the_plugin_sends() -> None:
    sql = (
        "SELECT $__timeInterval(window_start) AS time, stage, sum(entries) AS entries\n"
        "FROM stage_metrics FINAL\n"
        "WHERE $__timeFilter(window_start) AND channel IN (${rollup:sqlstring})\n"
        "  AND $__conditionalAll(segment IN (${segment:sqlstring}), $segment)\n"
        "GROUP BY time, stage ORDER BY time"
    )
    assert expand(sql, ctx(rollup=("web", "email"), segment=("family",))) == (
        "SELECT toStartOfInterval(toDateTime(window_start), INTERVAL 60 second) AS time, stage, "
        "sum(entries) AS entries\nFROM stage_metrics FINAL\n"
        f"WHERE window_start >= toDateTime({FROM_S}) AND window_start <= toDateTime({TO_S}) "
        "AND channel IN ('web','email')\n  AND segment IN ('family')\nGROUP BY time, stage ORDER BY time"
    )
    assert variables_in(sql) == {"rollup", "segment"}
    assert macro_calls(sql) == [
        ("timeInterval", ["window_start"]),
        ("timeFilter", ["window_start"]),
        ("conditionalAll", []),
    ]


# --- interval, time and options -------------------------------------------------------------------


def test_interval_like_grafana() -> None:
    six_hours = (END - timedelta(hours=6), END)
    assert interval_for(*six_hours) == timedelta(seconds=20)  # 21.6 s rounds to 20 s
    assert interval_for(*six_hours, min_interval="1m") == timedelta(minutes=1)
    assert interval_for(*six_hours, min_interval=">10s") == timedelta(seconds=20)
    assert interval_for(END - timedelta(days=30), END) == timedelta(minutes=30)
    assert interval_for(END - timedelta(days=30), END, max_data_points=100) == timedelta(hours=6)
    assert [round_interval(ms) for ms in (5, 1_000, 59_000, 100_000, 4e9)] == [
        10, 1_000, 60_000, 120_000, 31_536_000_000
    ]  # fmt: skip
    assert parse_duration("1.5h") == timedelta(minutes=90)
    with pytest.raises(MacroError):
        parse_duration("soon")
    assert [seconds_to_hms(s) for s in (0.25, 20, 90, 7200, 86400 * 2, 0)] == [
        "250ms", "20s", "1m", "2h", "2d", "less than a millisecond"
    ]  # fmt: skip


def test_relative_times() -> None:
    now = datetime(2026, 11, 26, 12, 34, 56, tzinfo=UTC)
    assert resolve_time("now", now) == now
    assert resolve_time("now-6h", now) == now - timedelta(hours=6)
    assert resolve_time("now-30d", now) == now - timedelta(days=30)
    assert resolve_time("now-1d/d", now) == datetime(2026, 11, 25, tzinfo=UTC)
    assert resolve_time("now/d", now, round_up=True) == datetime(
        2026, 11, 26, 23, 59, 59, 999_000, tzinfo=UTC
    )
    assert resolve_time("2026-11-01T00:00:00", now) == datetime(2026, 11, 1, tzinfo=UTC)
    for bad in ("now-6x", "yesterday", "now/w"):
        with pytest.raises(MacroError):
            resolve_time(bad, now)


def test_variable_options() -> None:
    assert options_from_rows([("web",), ("chat",)]) == ("web", "chat")
    assert options_from_rows([(1, "one"), (2, "two")]) == ("1", "2")  # value, then text
    assert custom_options("1 hour : 3600,1 day : 86400") == (("1 hour", "3600"), ("1 day", "86400"))
    assert custom_options("a, b\\,c ,d") == (("a", "a"), ("b,c", "b,c"), ("d", "d"))
