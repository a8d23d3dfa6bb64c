"""ClickHouse access over HTTP (clickhouse-connect), the same in embedded mode and production.

Errors come back as :class:`pipeline.errors.ClickHouseError` with ClickHouse's own code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from pydantic import SecretStr

from pipeline.errors import ClickHouseError
from pipeline.settings import Settings

_CODE = re.compile(r"Code:\s*(\d+)")
TRANSIENT_CODES = frozenset({159, 164, 202, 203, 209, 210, 241, 242, 252, 285, 319, 425, 999})
"""Timeouts, too many parts/queries, memory limit, network: worth a retry."""


@dataclass(frozen=True)
class ClickHouseConfig:
    url: str = "http://127.0.0.1:8123"
    database: str = "touchpoint"
    user: str = "default"
    password: SecretStr = field(default_factory=lambda: SecretStr(""))
    verify_tls: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, *, readonly: bool = False) -> ClickHouseConfig:
        return cls(
            url=settings.clickhouse_url,
            database=settings.clickhouse_database,
            user=settings.clickhouse_readonly_user if readonly else settings.clickhouse_user,
            password=(
                settings.clickhouse_readonly_password if readonly else settings.clickhouse_password
            ),
            verify_tls=settings.clickhouse_verify_tls,
        )


def error_code(exc: BaseException) -> int | None:
    """ClickHouse's numeric error code in a driver exception, if it carries one."""
    match = _CODE.search(str(exc))
    return int(match.group(1)) if match else None


def translate(exc: DriverError, *, stage: str) -> ClickHouseError:
    """Turn a driver exception into ours, keeping the code and the first line of the text."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ClickHouseError(first_line, code=error_code(exc), stage=stage)


def is_transient(exc: BaseException) -> bool:
    """Network trouble and overload codes are retried; anything else is a real refusal."""
    if isinstance(exc, OperationalError):
        return True
    code = error_code(exc)
    return code is None or code in TRANSIENT_CODES if isinstance(exc, DatabaseError) else True


def without_dataframes() -> None:
    """Declare pandas and polars absent for clickhouse-connect in this process.

    clickhouse-connect checks the data of every insert against ``pandas.DataFrame``, which
    imports pandas (and pyarrow with it) on the first insert: about 70 MB of resident memory
    in a worker that only ever inserts Python rows. With these set to None it treats them as
    not installed (its own fallback when the import fails). For processes that never ask for
    a DataFrame or an Arrow table: the workers."""
    from clickhouse_connect.driver import options

    for name in ("pd", "pl"):
        setattr(options, name, None)


def connect(cfg: ClickHouseConfig, *, database: str | None = None, **kwargs: Any) -> Client:
    """Open a clickhouse-connect HTTP client; ``database=""`` connects without one.

    A ``chdb:///dir`` URL opens chDB in this process instead (one process per directory).
    """
    parts = urlsplit(cfg.url)
    if parts.scheme == "chdb":
        return clickhouse_connect.get_client(
            dsn=cfg.url, database=cfg.database if database is None else database
        )
    secure = parts.scheme == "https"
    try:
        return clickhouse_connect.get_client(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8443 if secure else 8123),
            username=cfg.user,
            password=cfg.password.get_secret_value(),
            database=cfg.database if database is None else database,
            secure=secure,
            verify=cfg.verify_tls,
            **kwargs,
        )
    except DriverError as exc:
        raise translate(exc, stage="clickhouse.connect") from exc
