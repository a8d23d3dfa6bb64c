"""`touchpoint sql` without a server: parameters, value text, table/CSV/JSON output, and the
error line from a ClickHouse exception."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from ipaddress import IPv4Address
from uuid import UUID

import pytest

from pipeline.cli_sql import (
    Format,
    describe_error,
    format_csv,
    format_json,
    format_table,
    parse_params,
    render,
    text,
)


def test_params_are_name_value_pairs_split_at_the_first_equals() -> None:
    assert parse_params([]) == {}
    assert parse_params(["window_seconds=3600", "q=a=b", "empty=", "_x1=y"]) == {
        "window_seconds": "3600", "q": "a=b", "empty": "", "_x1": "y",
    }  # fmt: skip
    for bad in ("noequals", "=1", "1x=2", "a-b=1", "a b=1"):
        with pytest.raises(ValueError, match="expected name=value"):
            parse_params([bad])


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "NULL"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (0.1, "0.1"),
        ("text", "text"),
        (datetime(2026, 11, 26, 9, 15, 2), "2026-11-26 09:15:02"),
        (datetime(2026, 11, 26, 9, 15, 2, 120000), "2026-11-26 09:15:02.120"),
        (datetime(2026, 11, 26, 9, 15, 2, 120500), "2026-11-26 09:15:02.120500"),
        (datetime(2026, 11, 26, 9, 15, 2, tzinfo=UTC), "2026-11-26 09:15:02+00:00"),
        (date(2026, 11, 26), "2026-11-26"),
        (["a", "b"], '["a","b"]'),
        ((1, "x"), '[1,"x"]'),
        ({"web": 3}, '{"web":3}'),
        (Decimal("1.50"), "1.50"),
        (UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (IPv4Address("1.2.3.4"), "1.2.3.4"),
        (b"\xffab", "\ufffdab"),
    ],
)
def test_values_print_as_clickhouse_prints_them(value: object, shown: str) -> None:
    assert text(value) == shown


COLUMNS = ("channel", "purchases", "first", "path")
ROWS = [
    ("web", 12.5, datetime(2026, 1, 1, 0, 0, 0, 250000), ["awareness", "purchase"]),
    ("call_center", 3, None, []),
    ("", None, datetime(2026, 1, 2), ["x"]),
]


def test_table_aligns_columns_right_aligns_numbers_and_counts_rows() -> None:
    lines = format_table(COLUMNS, ROWS).splitlines()
    assert lines[0].split() == list(COLUMNS)
    assert set(lines[1]) == {"-", " "}
    assert lines[-1] == "(3 rows)"
    widths = [len(dash) for dash in lines[1].split("  ")]
    assert widths == [len("call_center"), len("purchases"), len("2026-01-01 00:00:00.250"), len('["awareness","purchase"]')]
    end_of_numbers = widths[0] + 2 + widths[1]
    assert [line[end_of_numbers - 4 : end_of_numbers] for line in lines[2:5]] == ["12.5", "   3", "NULL"]
    assert lines[2].startswith("web ") and lines[3].startswith("call_center ")
    assert format_table(("n",), [(1,)]).splitlines()[-1] == "(1 row)"
    assert format_table(("n",), []).splitlines() == ["n", "-", "(0 rows)"]


def test_table_cuts_long_cells_and_escapes_newlines() -> None:
    out = format_table(("s",), [("x" * 100,), ("a\nb\tc",)], max_width=10)
    assert "x" * 9 + "…" in out and "x" * 10 not in out
    assert "a\\nb\\tc" in out
    assert "x" * 100 in format_table(("s",), [("x" * 100,)], max_width=0)


def test_csv_has_a_header_quotes_as_needed_and_leaves_null_empty() -> None:
    out = format_csv(("a", "b"), [("x,y", None), ('say "hi"', 2), ("line\nbreak", 0.5)])
    assert list(csv.reader(io.StringIO(out))) == [
        ["a", "b"], ["x,y", ""], ['say "hi"', "2"], ["line\nbreak", "0.5"],
    ]  # fmt: skip


def test_json_is_an_array_of_objects_with_json_types() -> None:
    out = format_json(COLUMNS, ROWS)
    assert json.loads(out) == [
        {"channel": "web", "purchases": 12.5, "first": "2026-01-01 00:00:00.250", "path": ["awareness", "purchase"]},
        {"channel": "call_center", "purchases": 3, "first": None, "path": []},
        {"channel": "", "purchases": None, "first": "2026-01-02 00:00:00", "path": ["x"]},
    ]
    assert len(out.splitlines()) == len(ROWS) + 2  # one row per line
    assert format_json(("a",), []) == "[]\n"
    assert json.loads(format_json(("f", "m"), [(float("nan"), {1: Decimal("2.5")})])) == [
        {"f": None, "m": {"1": "2.5"}}
    ]


def test_render_picks_the_format() -> None:
    assert render(Format.csv, ("a",), [(1,)]) == "a\n1\n"
    assert json.loads(render(Format.json, ("a",), [(1,)])) == [{"a": 1}]
    assert render(Format.table, ("a",), [(1,)]).endswith("(1 row)\n")


def test_errors_keep_the_code_and_clickhouse_message_only() -> None:
    driver = Exception(
        "Received ClickHouse exception, code: 62, server response: Code: 62. DB::Exception: "
        "Syntax error: failed at position 1 (SELEC): SELEC 1. (SYNTAX_ERROR) (for url http://127.0.0.1:8123)"
    )
    assert describe_error(driver, 62) == (
        "ClickHouse error 62: Syntax error: failed at position 1 (SELEC): SELEC 1. (SYNTAX_ERROR)"
    )
    server = Exception("Code: 47. DB::Exception: Unknown identifier `x`. (UNKNOWN_IDENTIFIER) (version 25.8.1.1)")
    assert describe_error(server, 47) == "ClickHouse error 47: Unknown identifier `x`. (UNKNOWN_IDENTIFIER)"
    assert describe_error(Exception("connection refused\nmore"), None) == "connection refused"
