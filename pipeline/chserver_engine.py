"""The chDB side of the embedded ClickHouse HTTP server.

One process owns the data directory. It holds a chDB connection on it per ClickHouse
``readonly`` level, which chDB enforces per connection: 0 (read-write), 1 (readonly users:
reads only, no setting changes) and 2 (GET requests: reads only, settings allowed). chDB
calls block and the session is not guaranteed thread-safe, so every call goes through
:meth:`ChdbEngine.execute` under one lock, from a worker thread.

HTTP requests are stateless, while a chDB connection keeps state (current database,
``SET`` settings). Each connection therefore tracks what it has applied on top of its state
at open (including what ``SET``/``USE`` statements changed) and brings the connection to
what the next request asks for (``USE``/``SET`` only for what differs), so settings never
leak from one request into another.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, cast

from chdb import _chdb

from pipeline.chserver_errors import (
    READONLY,
    SYNTAX_ERROR,
    UNKNOWN_SETTING,
    ClickHouseError,
    readonly_error,
)
from pipeline.chserver_sql import (
    StatementInfo,
    quote_identifier,
    quote_string,
    set_statement_names,
)

# Applied by the server itself, never via SET: the database is USE'd, readonly picks a connection.
_UNTRACKED: Final = frozenset({"database", "readonly"})
_STARTUP_OPTIONS: Final = "session_timezone=UTC"
_READONLY_LEVELS: Final = (0, 1, 2)
_UNKNOWN: Final = "\x00unknown"  # the value of a setting a SET statement changed

log = logging.getLogger(__name__)


class _RawResult(Protocol):
    def bytes(self) -> bytes: ...
    def rows_read(self) -> int: ...
    def bytes_read(self) -> int: ...
    def rows_written(self) -> int: ...
    def bytes_written(self) -> int: ...
    def storage_rows_read(self) -> int: ...
    def storage_bytes_read(self) -> int: ...
    def elapsed(self) -> float: ...


class _RawConnection(Protocol):
    """The native ``chdb._chdb.connect`` object (used directly: it takes bytes, no copies)."""

    def query(self, sql: bytes | str, fmt: str, *, params: Mapping[str, str]) -> _RawResult: ...
    def classify_query(self, sql: bytes | str) -> dict[str, object]: ...
    def send_insert(self, sql: bytes | str, fmt: str) -> object: ...
    def insert_append(self, handle: object, data: bytes) -> None: ...
    def insert_done(self, handle: object) -> _RawResult: ...
    def insert_cancel(self, handle: object) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class QueryJob:
    """One request, ready to run: for an inline INSERT, ``statement`` has no FORMAT clause."""

    statement: bytes
    info: StatementInfo
    database: str = "default"
    default_format: str = "TabSeparated"
    params: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)
    insert_format: str | None = None
    data: Sequence[bytes] = ()
    readonly: int = 0  # ClickHouse's readonly level: 0, 1 or 2


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    body: bytes
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    elapsed_ns: int = 0

    @classmethod
    def of(cls, result: _RawResult, body: bytes = b"") -> QueryOutcome:
        return cls(
            body=body,
            read_rows=result.storage_rows_read(),
            read_bytes=result.storage_bytes_read(),
            written_rows=result.rows_written(),
            written_bytes=result.bytes_written(),
            result_rows=result.rows_read(),
            elapsed_ns=int(result.elapsed() * 1e9),
        )

    def summary(self) -> dict[str, str]:
        """The X-ClickHouse-Summary fields (ClickHouse sends numbers as strings)."""
        return {
            "read_rows": str(self.read_rows),
            "read_bytes": str(self.read_bytes),
            "written_rows": str(self.written_rows),
            "written_bytes": str(self.written_bytes),
            "total_rows_to_read": str(self.read_rows),
            "result_rows": str(self.result_rows),
            "result_bytes": str(len(self.body)),
            "elapsed_ns": str(self.elapsed_ns),
        }


def _connect(conn_str: str) -> _RawConnection:
    try:
        raw = _chdb.connect(conn_str)  # type: ignore[attr-defined]  # chdb's _chdb stub omits connect
    except Exception as exc:
        raise ClickHouseError.from_engine(exc) from exc
    return cast(_RawConnection, raw)


def _run(raw: _RawConnection, sql: bytes | str, fmt: str = "TabSeparated") -> _RawResult:
    try:
        return raw.query(sql, fmt, params={})
    except Exception as exc:
        raise ClickHouseError.from_engine(exc) from exc


def _settings_rows(raw: _RawConnection, where: str) -> dict[str, str]:
    sql = f"SELECT name, value FROM system.settings {where}"
    rows = json.loads(_run(raw, sql, "JSONCompact").bytes())["data"]
    return {str(name): str(value) for name, value in rows}


class _Connection:
    """A chDB connection plus the per-request state (database, settings) applied to it."""

    def __init__(self, raw: _RawConnection) -> None:
        self.raw = raw
        self.initial = _settings_rows(raw, "")
        self._changed_at_open = _settings_rows(raw, "WHERE changed")
        self._database = "default"
        self._overrides: dict[str, str] = {}

    def prepare(self, database: str, settings: Mapping[str, str]) -> None:
        if database != self._database:
            _run(self.raw, f"USE {quote_identifier(database)}")
            self._database = database
        wanted = {
            name: value for name, value in settings.items() if self.initial.get(name) != value
        }
        for name in self._overrides.keys() - wanted.keys():
            self._set(name, None)
        for name, value in wanted.items():
            if self._overrides.get(name) != value:
                self._set(name, value)

    def _set(self, name: str, value: str | None) -> None:
        """SET one setting (None: back to its value at open); a failed SET changes nothing."""
        if value is None and name in self._changed_at_open:
            value = self._changed_at_open[name]
        literal = "DEFAULT" if value is None else quote_string(value)
        _run(self.raw, f"SET {quote_identifier(name)} = {literal}")
        if value is None or self._changed_at_open.get(name) == value:
            self._overrides.pop(name, None)
        else:
            self._overrides[name] = value

    def forget(self, database: bool, settings: Sequence[str]) -> None:
        """A USE / SET statement ran: the next request re-applies what it needs."""
        if database:
            self._database = ""
        for name in settings:
            self._overrides[name] = _UNKNOWN

    def run(self, job: QueryJob) -> QueryOutcome:
        if job.insert_format is not None:
            return self._insert(job, job.insert_format)
        try:
            result = self.raw.query(job.statement, job.default_format, params=dict(job.params))
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc
        return QueryOutcome.of(result, result.bytes())

    def _insert(self, job: QueryJob, fmt: str) -> QueryOutcome:
        try:
            handle = self.raw.send_insert(job.statement, fmt)
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc
        try:
            for chunk in job.data:
                self.raw.insert_append(handle, chunk)
            return QueryOutcome.of(self.raw.insert_done(handle))
        except Exception as exc:
            self._cancel(handle)
            raise ClickHouseError.from_engine(exc) from exc

    def _cancel(self, handle: object) -> None:
        try:
            self.raw.insert_cancel(handle)
        except Exception:  # already finished or failed: nothing left to cancel
            log.debug("cancelling a failed insert", exc_info=True)


class ChdbEngine:
    """Runs queries on the chDB data directory, one at a time."""

    def __init__(self, data_dir: Path) -> None:
        if "?" in str(data_dir):
            raise ValueError(f"data directory path must not contain '?': {data_dir}")
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._conns: dict[int, _Connection] = {}

    def open(self) -> None:
        with self._lock:
            if self._conns:
                return
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path = str(self.data_dir.resolve())
            try:
                for level in _READONLY_LEVELS:
                    options = f"readonly={level}&{_STARTUP_OPTIONS}" if level else _STARTUP_OPTIONS
                    self._conns[level] = _Connection(_connect(f"{path}?{options}"))
            except BaseException:
                self._close_all()
                raise

    def close(self) -> None:
        with self._lock:
            self._close_all()

    def _close_all(self) -> None:
        for level in sorted(self._conns, reverse=True):  # the read-write one last
            self._conns.pop(level).raw.close()

    def execute(self, job: QueryJob) -> QueryOutcome:
        with self._lock:
            conn = self._conns.get(job.readonly)
            if conn is None:
                raise RuntimeError("the chDB engine is not open")
            self._check_settings(job.settings)
            conn.prepare(job.database, job.settings)
            if job.insert_format is None:
                _classify(conn.raw, job)
            assigned = self._assigned_settings(job)
            try:
                return conn.run(job)
            finally:
                if assigned or job.info.keyword == "USE":
                    conn.forget(job.info.keyword == "USE", assigned)

    def _check_settings(self, settings: Iterable[str]) -> None:
        known = self._conns[0].initial
        for name in settings:
            if name not in known or name in _UNTRACKED:
                raise ClickHouseError(UNKNOWN_SETTING, f"Unknown setting '{name}'")

    def _assigned_settings(self, job: QueryJob) -> tuple[str, ...]:
        """The settings a SET statement changes (query parameters, param_*, are not tracked)."""
        if job.info.keyword != "SET":
            return ()
        names = set_statement_names(job.statement)
        if "readonly" in names:
            raise ClickHouseError(READONLY, "Use readonly=1 as a URL parameter instead of SET")
        settings = tuple(name for name in names if not name.startswith("param_"))
        self._check_settings(settings)
        return settings


def _classify(raw: _RawConnection, job: QueryJob) -> None:
    """Check a statement with ClickHouse's own parser (in chDB) before running it."""
    try:
        verdict = raw.classify_query(job.statement)
    except Exception:  # unparseable: running it reports the syntax error
        return
    query_class = str(getattr(verdict.get("query_class"), "name", "UNKNOWN"))
    count = verdict.get("statement_count", 0)
    if isinstance(count, int) and count > 1:
        raise ClickHouseError(SYNTAX_ERROR, "Multi-statements are not allowed")
    if job.readonly and query_class not in ("READ_ONLY", "UNKNOWN"):
        raise readonly_error()
