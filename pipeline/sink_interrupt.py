"""The ``sink.during_insert`` failpoint's prelude: a real insert left half sent.

To die *during* an insert, the process must die while ClickHouse holds a request it has not
finished receiving. :func:`half_sent_insert` starts the batch's insert with the real client
(same table, columns, rows and ``insert_deduplication_token``) as a streamed
(``Transfer-Encoding: chunked``) ``JSONEachRow`` body, lets the transport write the first
half of the rows to the socket, and then never sends the rest: the request stays in flight.
It returns once the first half is on the wire, so the failpoint's ``exit`` kills the process
with the insert open, and ClickHouse sees the connection close mid-body. It must store none
of it (a partial block stored under the token would make the full retry a "duplicate").
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Sequence
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

_WIRE_TIMEOUT = 30.0


def json_lines(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """Rows as ``JSONEachRow`` (datetimes in ISO 8601, read with ``best_effort``)."""
    return b"".join(
        orjson.dumps(dict(zip(columns, row, strict=True)), default=str) + b"\n" for row in rows
    )


def half_sent_insert(
    client: Client, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str
) -> None:
    """Start the insert of ``rows`` on a thread, send the first half, hold the rest forever;
    return once the first half has been written to the socket (``RuntimeError`` if not)."""
    on_wire = threading.Event()
    half = max(1, len(rows) // 2)

    def body() -> Generator[bytes, None, None]:
        yield json_lines(columns, rows[:half])
        on_wire.set()  # resumed for the next chunk: the transport has sent the first one
        threading.Event().wait()  # the rest never comes: the request stays open
        yield json_lines(columns, rows[half:])  # pragma: no cover (never reached)

    def send() -> None:
        settings = {"insert_deduplication_token": token, "date_time_input_format": "best_effort"}
        with contextlib.suppress(Exception):  # the process exits before any answer
            client.raw_insert(table, columns, body(), settings=settings, fmt="JSONEachRow")

    threading.Thread(target=send, name=f"half-insert-{table}", daemon=True).start()
    if not on_wire.wait(_WIRE_TIMEOUT):
        raise RuntimeError(f"half_sent_insert: first half of {table} not sent in {_WIRE_TIMEOUT}s")
