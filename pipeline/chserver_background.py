"""Running the embedded ClickHouse HTTP server from synchronous code (tests, tools).

``BackgroundServer`` runs a :class:`~pipeline.chserver.ClickHouseHTTPServer` on its own
event loop in a daemon thread::

    with BackgroundServer(ClickHouseHTTPServer(data_dir, port=0)) as server:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from pipeline.chserver import ClickHouseHTTPServer


class BackgroundServer:
    """Start/stop a server on an event loop in a daemon thread; restartable."""

    def __init__(self, server: ClickHouseHTTPServer, timeout: float = 60.0) -> None:
        self.server = server
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="chserver-loop", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self.server.start())
        except BaseException:
            self._stop_loop()
            raise

    def stop(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self.server.stop())
        finally:
            self._stop_loop()

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout)

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self._timeout)
        loop.close()

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
