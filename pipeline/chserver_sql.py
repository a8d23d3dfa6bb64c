"""Lexical SQL analysis for the embedded ClickHouse HTTP server.

Only what the HTTP layer needs, on raw bytes (an INSERT body may carry binary data after
its ``FORMAT`` clause, which is never scanned): the statement kind, where an inline INSERT
payload starts, the output ``FORMAT`` clause, multi-statements and ``INTO OUTFILE``.
Authoritative classification of what a statement does comes from the ClickHouse parser
in chDB (see :mod:`pipeline.chserver_engine`); this module is the first line of defence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from pipeline.chserver_errors import (
    INTO_OUTFILE_NOT_ALLOWED,
    SYNTAX_ERROR,
    ClickHouseError,
    readonly_error,
)

_SKIP: Final = re.compile(
    rb"(?:\s++|--[^\n]*+|\#[ !][^\n]*+|/\*.*?(?:\*/|\Z))++",
    re.S,
)
_TOKEN: Final = re.compile(
    rb"(?P<word>[A-Za-z_][A-Za-z0-9_]*+)"
    rb"|(?P<string>'(?:[^'\\]++|\\.|'')*+(?:'|\Z))"
    rb"|(?P<ident>\"(?:[^\"\\]++|\\.|\"\")*+(?:\"|\Z)|`(?:[^`\\]++|\\.|``)*+(?:`|\Z))"
    rb"|(?P<heredoc>\$(?P<tag>[A-Za-z0-9_]*+)\$.*?(?:\$(?P=tag)\$|\Z))"
    rb"|(?P<number>[0-9][A-Za-z0-9_.]*+)"
    rb"|(?P<punct>.)",
    re.S,
)

READ_KEYWORDS: Final = frozenset(
    {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"}
)
# Statements that answer with a result set (and so an X-ClickHouse-Format header).
RESULT_KEYWORDS: Final = READ_KEYWORDS | {"CHECK", "(", "KILL"}
# After these an INSERT carries no inline payload: VALUES / SELECT data is plain SQL text.
_INSERT_SQL_DATA: Final = frozenset({"VALUES", "SELECT", "WITH"})
_FORMAT_NOT_AFTER: Final = frozenset({"INTO", "TABLE", "FUNCTION", "."})
_OPENING: Final = frozenset("([{")
_CLOSING: Final = frozenset(")]}")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: bytes
    start: int
    end: int

    @property
    def upper(self) -> str:
        return self.text.decode("latin-1").upper() if self.kind in ("word", "punct") else ""


@dataclass(frozen=True, slots=True)
class InsertData:
    """``INSERT ... FORMAT <name>`` split into the statement and where its payload starts."""

    statement: bytes
    format_name: str
    data_offset: int


@dataclass(frozen=True, slots=True)
class StatementInfo:
    keyword: str
    insert: InsertData | None = None
    output_format: str | None = None
    multi_statement: bool = False
    into_outfile: bool = False

    @property
    def produces_result(self) -> bool:
        return self.keyword in RESULT_KEYWORDS


def iter_tokens(sql: bytes, pos: int = 0) -> Iterator[Token]:
    """Significant tokens of ``sql`` from ``pos``: whitespace and comments are skipped."""
    end = len(sql)
    while True:
        skipped = _SKIP.match(sql, pos)
        if skipped is not None:
            pos = skipped.end()
        if pos >= end:
            return
        match = _TOKEN.match(sql, pos)
        if match is None:  # pragma: no cover - the punct alternative matches any byte
            return
        kind = match.lastgroup or "punct"
        yield Token(kind, match.group(), pos, match.end())
        pos = match.end()


def analyze(sql: bytes) -> StatementInfo:
    """Analyse a statement (for an INSERT, scanning stops where its inline data starts)."""
    tokens = iter_tokens(sql)
    first = next(tokens, None)
    if first is None:
        raise ClickHouseError(SYNTAX_ERROR, "Empty query")
    keyword = first.upper
    if keyword == "INSERT":
        return StatementInfo(keyword, insert=_find_insert_data(sql, tokens))
    return _scan_query(keyword, tokens)


def _find_insert_data(sql: bytes, tokens: Iterator[Token]) -> InsertData | None:
    depth = 0
    previous = "INSERT"
    for token in tokens:
        word = token.upper
        depth += (word == "(") - (word == ")")
        if depth == 0 and word in _INSERT_SQL_DATA:
            return None
        if depth == 0 and word == "FORMAT" and previous not in _FORMAT_NOT_AFTER:
            name = next(tokens, None)
            if name is None or name.kind != "word":
                raise ClickHouseError(SYNTAX_ERROR, "Expected a format name after FORMAT")
            statement = sql[: token.start].rstrip()
            return InsertData(statement, name.text.decode(), _skip_to_data(sql, name.end))
        previous = word
    return None


def _skip_to_data(sql: bytes, pos: int) -> int:
    """ClickHouse's rule: data starts after the first newline or after the blanks."""
    end = len(sql)
    while pos < end and sql[pos] in b" \t\f":
        pos += 1
    if sql.startswith(b"\r", pos):
        pos += 1
    if sql.startswith(b"\n", pos):
        pos += 1
    return pos


def _scan_query(keyword: str, tokens: Iterator[Token]) -> StatementInfo:
    depth = 0
    output_format: str | None = None
    previous = ""
    into_outfile = False
    pending: Token | None = None
    for token in tokens:
        word = token.upper
        if depth == 0 and word == ";":
            if any(rest.upper != ";" for rest in tokens):
                return StatementInfo(keyword, None, output_format, True, into_outfile)
            break
        if pending is not None and token.kind == "word" and word != "SETTINGS":
            output_format = None  # ``format`` was an identifier, not the FORMAT clause
        pending = None
        depth += (word == "(") - (word == ")")
        if depth == 0 and previous == "FORMAT" and token.kind == "word":
            output_format, pending = token.text.decode(), token
        into_outfile = into_outfile or (previous == "INTO" and word == "OUTFILE")
        previous = word
    return StatementInfo(keyword, None, output_format, False, into_outfile)


def check_statement(info: StatementInfo, *, readonly: bool, reason: str = "") -> None:
    """Reject what the HTTP interface never runs, and writes in readonly mode."""
    if info.multi_statement:
        raise ClickHouseError(SYNTAX_ERROR, "Multi-statements are not allowed")
    if info.into_outfile:
        raise ClickHouseError(INTO_OUTFILE_NOT_ALLOWED, "INTO OUTFILE is not allowed")
    if readonly and info.keyword not in READ_KEYWORDS and info.keyword != "(":
        raise readonly_error(reason)


def set_statement_names(sql: bytes) -> tuple[str, ...]:
    """The setting names ``SET a = 1, b = 'x'`` assigns (``sql`` must start with SET)."""
    tokens = iter_tokens(sql)
    next(tokens, None)
    names: list[str] = []
    expect_name, depth = True, 0
    for token in tokens:
        word = token.upper
        if expect_name:
            equals = next(tokens, None)
            if token.kind not in ("word", "ident") or equals is None or equals.upper != "=":
                break
            names.append(_unquote(token.text))
            expect_name = False
            continue
        depth += (word in _OPENING) - (word in _CLOSING)
        expect_name = depth == 0 and word == ","
    if not names or expect_name:
        raise ClickHouseError(SYNTAX_ERROR, "Cannot parse the SET statement")
    return tuple(names)


def _unquote(text: bytes) -> str:
    name = text.decode()
    return name[1:-1] if name[:1] in ('"', "`") else name


def quote_identifier(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace("`", "\\`")
    return f"`{escaped}`"


def quote_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
