"""``touchpoint sql``: run one query against the configured ClickHouse and print the result
as an aligned table (default), CSV with a header line, or JSON (an array of objects).

``--param name=value`` binds ClickHouse query parameters (``{name:Type}`` placeholders,
sent as ``param_<name>``; ClickHouse parses the value as the placeholder's type). The
formatting functions are pure, so they are tested without a server.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from collections.abc import Sequence
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer

from pipeline.cli import ClickHouseURL, Database, cli, flag, settings_from
from pipeline.errors import ClickHouseError

_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXCEPTION = re.compile(r"DB::Exception:\s*(.*)", re.S)
_TRAILER = re.compile(r"\s*\((?:for url|version) [^)]*\)\s*$")


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """``name=value`` pairs into a dict; raises ValueError naming the bad item."""
    params: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _PARAM_NAME.fullmatch(name):
            raise ValueError(f"{item!r}: expected name=value, name a letter or _ then [A-Za-z0-9_]")
        params[name] = value
    return params


def text(value: Any) -> str:
    """One value as text, the way ClickHouse prints it (NULL as ``NULL``)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if not value.microsecond:
            return value.isoformat(sep=" ")
        spec = "milliseconds" if value.microsecond % 1000 == 0 else "microseconds"
        return value.isoformat(sep=" ", timespec=spec)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list | tuple | dict):
        return orjson.dumps(plain(value)).decode()
    return str(value)


def plain(value: Any) -> Any:
    """A JSON-ready value: numbers, strings, bools, None, lists and objects; the rest as text
    (dates and times as ClickHouse prints them, NaN and infinities as null)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {text(k): plain(v) for k, v in value.items()}
    return text(value)


def _numeric(column: Sequence[Any]) -> bool:
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in column if v is not None
    )


def _cell(value: Any, max_width: int) -> str:
    shown = text(value).replace("\n", "\\n").replace("\t", "\\t")
    return shown if max_width <= 0 or len(shown) <= max_width else shown[: max_width - 1] + "…"


def format_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, max_width: int = 80
) -> str:
    """An aligned text table: header, rule, one line per row (numbers right-aligned), and the
    row count. Cells longer than ``max_width`` characters are cut (0: never)."""
    cells = [[_cell(v, max_width) for v in row] for row in rows]
    numeric = [_numeric([row[i] for row in rows]) for i in range(len(columns))]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = (
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    out.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(out) + "\n"


def format_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV (RFC 4180) with a header line; NULL is an empty field."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if v is None else text(v) for v in row] for row in rows])
    return buffer.getvalue()


def format_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A JSON array with one object per row (keys in column order), one row per line."""
    lines = [
        orjson.dumps(dict(zip(columns, (plain(v) for v in row), strict=True))).decode()
        for row in rows
    ]
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def render(
    fmt: Format, columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 80
) -> str:
    if fmt is Format.csv:
        return format_csv(columns, rows)
    if fmt is Format.json:
        return format_json(columns, rows)
    return format_table(columns, rows, max_width=max_width)


def describe_error(exc: BaseException, code: int | None) -> str:
    """``ClickHouse error <code>: <message>`` from a driver exception's text."""
    found = _EXCEPTION.search(str(exc))
    message = found.group(1) if found else str(exc).strip().splitlines()[0]
    message = _TRAILER.sub("", _TRAILER.sub("", message.strip()))
    return f"ClickHouse error {code}: {message}" if code is not None else message


@cli.command()
def sql(
    query: Annotated[str, typer.Argument(help="The SQL to run ('-': read it from stdin).")],
    output: Annotated[
        Format, flag("sql", "format", "Output format.", "--format", "-f")
    ] = Format.table,
    param: Annotated[
        list[str] | None,
        flag(
            "sql",
            "param",
            "Query parameter name=value for {name:Type} (repeatable).",
            "--param",
            "-p",
        ),
    ] = None,
    max_width: Annotated[
        int, flag("sql", "max_width", "Table format: cut cells longer than this (0: never).")
    ] = 80,
    readonly: Annotated[
        bool,
        flag(
            "sql",
            "readonly",
            "Connect as the read-only user (TOUCHPOINT_CLICKHOUSE_READONLY_USER).",
            "--readonly",
        ),
    ] = False,
    clickhouse_url: ClickHouseURL = None,
    database: Database = None,
) -> None:
    """Run a query against the configured ClickHouse and print the result.

    Tables and views are described in docs/sql.md. Exit code 0: done; 1: ClickHouse
    refused the query (its error code and message are printed); 2: bad arguments or
    ClickHouse unreachable.
    """
    from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError

    from pipeline.chclient import ClickHouseConfig, connect, error_code

    try:
        params = parse_params(param or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--param") from None
    statement = sys.stdin.read() if query == "-" else query
    settings = settings_from(clickhouse_url=clickhouse_url, clickhouse_database=database)
    try:
        client = connect(ClickHouseConfig.from_settings(settings, readonly=readonly))
        result = client.query(statement, parameters=params or None)
    except ClickHouseError as exc:  # from connect: the server could not be reached
        typer.echo(f"touchpoint sql: {exc}", err=True)
        raise typer.Exit(2) from None
    except DriverError as exc:
        code = error_code(exc)
        typer.echo(f"touchpoint sql: {describe_error(exc, code)}", err=True)
        raise typer.Exit(1 if code is not None else 2) from None
    typer.echo(render(output, result.column_names, result.result_rows, max_width), nl=False)
