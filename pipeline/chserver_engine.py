"""The chDB side of the embedded ClickHouse HTTP server.

One process owns the data directory. It holds two chDB connections on it: a read-write one
and one opened with ``readonly=1`` (chDB enforces it per connection) for readonly users and
``readonly`` requests. chDB calls block and the session is not guaranteed thread-safe, so
every call goes through :meth:`ChdbEngine.execute` under one lock, from a worker thread.

HTTP requests are stateless, while a chDB connection keeps state (current database,
``SET`` settings). Each connection therefore tracks what it has applied on top of its state
at open, and brings the connection to what the next request asks for (``USE``/``SET`` only
for what differs), so per-request settings never leak into other requests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, cast

from chdb import _chdb

from pipeline.chserver_errors import SYNTAX_ERROR, UNKNOWN_SETTING, ClickHouseError, readonly_error
from pipeline.chserver_sql import StatementInfo, quote_identifier, quote_string

# Applied by the server itself, never via SET: the database is USE'd, readonly picks a connection.
_UNTRACKED: Final = frozenset({"database", "readonly"})
_STARTUP_OPTIONS: Final = "session_timezone=UTC"


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
    readonly: bool = False


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
        self._dirty = False

    def prepare(self, database: str, settings: Mapping[str, str]) -> None:
        if self._dirty:
            self._resync()
        if database != self._database:
            _run(self.raw, f"USE {quote_identifier(database)}")
            self._database = database
        wanted = {name: value for name, value in settings.items() if self.initial.get(name) != value}
        for name in self._overrides.keys() - wanted.keys():
            self._set(name, None)
        for name, value in wanted.items():
            if self._overrides.get(name) != value:
                self._set(name, value)

    def _set(self, name: str, value: str | None) -> None:
        if value is None and name in self._changed_at_open:
            value = self._changed_at_open[name]
        literal = "DEFAULT" if value is None else quote_string(value)
        self._dirty = True  # until the SET is known to have worked
        _run(self.raw, f"SET {quote_identifier(name)} = {literal}")
        self._dirty = False
        if value is None or self._changed_at_open.get(name) == value:
            self._overrides.pop(name, None)
        else:
            self._overrides[name] = value

    def mark_dirty(self) -> None:
        """A statement (SET, USE, ...) may have changed state behind the tracking."""
        self._dirty = True

    def _resync(self) -> None:
        changed = _settings_rows(self.raw, "WHERE changed")
        self._overrides = {
            name: value
            for name, value in changed.items()
            if name not in _UNTRACKED and self._changed_at_open.get(name) != value
        }
        self._database = _run(self.raw, "SELECT currentDatabase()").bytes().decode().strip()
        self._dirty = False

    def run(self, job: QueryJob) -> QueryOutcome:
        if job.insert_format is not None:
            return self._insert(job, job.insert_format)
        try:
            result = self.raw.query(job.statement, job.default_format, params=job.params)
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
            self.mark_dirty()


class ChdbEngine:
    """Runs queries on the chDB data directory, one at a time."""

    def __init__(self, data_dir: Path) -> None:
        if "?" in str(data_dir):
            raise ValueError(f"data directory path must not contain '?': {data_dir}")
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._rw: _Connection | None = None
        self._ro: _Connection | None = None

    def open(self) -> None:
        with self._lock:
            if self._rw is not None:
                return
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path = str(self.data_dir.resolve())
            rw = _Connection(_connect(f"{path}?{_STARTUP_OPTIONS}"))
            try:
                self._ro = _Connection(_connect(f"{path}?readonly=1&{_STARTUP_OPTIONS}"))
            except BaseException:
                rw.raw.close()
                raise
            self._rw = rw

    def close(self) -> None:
        with self._lock:
            for conn in (self._ro, self._rw):
                if conn is not None:
                    conn.raw.close()
            self._ro = self._rw = None

    def execute(self, job: QueryJob) -> QueryOutcome:
        with self._lock:
            if self._rw is None or self._ro is None:
                raise RuntimeError("the chDB engine is not open")
            conn = self._ro if job.readonly else self._rw
            self._check_settings(job.settings)
            conn.prepare(job.database, job.settings)
            control = job.insert_format is None and _classify(conn.raw, job)
            try:
                return conn.run(job)
            finally:
                if control:
                    conn.mark_dirty()

    def _check_settings(self, settings: Mapping[str, str]) -> None:
        assert self._rw is not None
        for name in settings:
            if name not in self._rw.initial or name in _UNTRACKED:
                raise ClickHouseError(UNKNOWN_SETTING, f"Unknown setting '{name}'")


def _classify(raw: _RawConnection, job: QueryJob) -> bool:
    """Check a statement with ClickHouse's own parser; True if it may change session state."""
    try:
        verdict = raw.classify_query(job.statement)
    except Exception:  # unparseable: running it reports the syntax error
        return False
    query_class = str(getattr(verdict.get("query_class"), "name", "UNKNOWN"))
    count = verdict.get("statement_count", 0)
    if isinstance(count, int) and count > 1:
        raise ClickHouseError(SYNTAX_ERROR, "Multi-statements are not allowed")
    if job.readonly and query_class not in ("READ_ONLY", "UNKNOWN"):
        raise readonly_error()
    return query_class == "CONTROL"
