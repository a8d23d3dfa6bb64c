"""Embedded ClickHouse HTTP server backed by chDB.

In embedded mode one process owns the chDB data directory (chDB allows one process per
directory) and serves the part of ClickHouse's HTTP interface that clickhouse-connect's
HTTP client uses, so workers, the dashboard, the CLI, tests, a user's own clickhouse-connect
or curl talk to ClickHouse over HTTP exactly as in production against a real server::

    python -m pipeline.chserver --data-dir .touchpoint/chdb --port 8123

Request handling: :mod:`pipeline.chserver_request` (query/body/params/settings),
:mod:`pipeline.chserver_engine` (chDB), :mod:`pipeline.chserver_auth` (users),
:mod:`pipeline.chserver_codec` (Content-Encoding), :mod:`pipeline.chserver_sql`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from aiohttp import web
from pydantic import TypeAdapter

from pipeline.chserver_auth import DEFAULT_USERS, ServerUser, UserRegistry, extract_credentials
from pipeline.chserver_engine import ChdbEngine, QueryJob, QueryOutcome
from pipeline.chserver_errors import STD_EXCEPTION, ClickHouseError
from pipeline.chserver_request import build_job

__all__ = ["DEFAULT_MAX_BODY_SIZE", "ClickHouseHTTPServer", "ServerUser", "main", "serve_forever"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_SIZE: Final = 256 * 1024 * 1024
_MAX_URL_SIZE: Final = 1024 * 1024  # ClickHouse's http_max_uri_size
_TEXT: Final = "text/plain; charset=UTF-8"
_OK: Final = b"Ok.\n"
_ENV: Final = "TOUCHPOINT_CLICKHOUSE_"


class ClickHouseHTTPServer:
    """The ClickHouse HTTP interface on ``host:port`` over a chDB data directory.

    ``port=0`` binds a free port on the first :meth:`start` (see :attr:`port`) and keeps it
    across restarts. Queries run one at a time on a worker thread; /ping is always served.
    """

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 8123,
        users: Sequence[ServerUser] = DEFAULT_USERS,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        display_name: str | None = None,
    ) -> None:
        self._engine = ChdbEngine(Path(data_dir))
        self._users = UserRegistry(users)
        self._host = host
        self._port = port
        self._max_body_size = max_body_size
        self._display_name = display_name or socket.gethostname()
        self._executor: ThreadPoolExecutor | None = None
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Open the data directory and start listening (a no-op when already running)."""
        if self._runner is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chserver-chdb")
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._engine.open)
            runner = await self._listen()
        except BaseException:
            await asyncio.get_running_loop().run_in_executor(executor, self._engine.close)
            executor.shutdown(wait=True)
            raise
        self._executor, self._runner = executor, runner
        log.info("ClickHouse HTTP server on %s (chDB data in %s)", self.url, self._engine.data_dir)

    async def _listen(self) -> web.AppRunner:
        runner = web.AppRunner(
            self._make_app(),
            access_log=None,
            auto_decompress=False,  # request bodies are decoded by chserver_codec, bounded
            max_line_size=_MAX_URL_SIZE,
            max_field_size=_MAX_URL_SIZE,
            shutdown_timeout=10.0,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self._host, self._port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        return runner

    async def stop(self) -> None:
        """Stop listening, finish in-flight requests and close the data directory."""
        runner, executor = self._runner, self._executor
        if runner is None or executor is None:
            return
        self._runner = None
        await runner.cleanup()  # in-flight requests still run on the executor
        self._executor = None
        await asyncio.get_running_loop().run_in_executor(executor, self._engine.close)
        executor.shutdown(wait=True)
        log.info("ClickHouse HTTP server on %s stopped", self.url)

    async def __aenter__(self) -> ClickHouseHTTPServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=self._max_body_size)
        app.router.add_get("/ping", self._ping)
        app.router.add_route("GET", "/", self._query)
        app.router.add_route("POST", "/", self._query)
        return app

    async def _ping(self, _request: web.Request) -> web.Response:
        return web.Response(body=_OK, headers={"Content-Type": _TEXT})

    async def _query(self, request: web.Request) -> web.Response:
        query_id = request.query.get("query_id") or str(uuid.uuid4())
        if request.method == "GET" and "query" not in request.query:
            return web.Response(body=_OK, headers={"Content-Type": _TEXT})
        try:
            credentials = extract_credentials(request.headers, request.query)
            user = self._users.authenticate(credentials)
            job = await build_job(request, user, self._max_body_size)
            outcome = await self._execute(job)
        except ClickHouseError as exc:
            log.debug("query %s failed: %s", query_id, exc.text)
            return self._error(exc, query_id)
        except Exception as exc:
            log.exception("query %s failed unexpectedly", query_id)
            return self._error(ClickHouseError(STD_EXCEPTION, repr(exc)), query_id)
        return self._result(job, outcome, query_id)

    async def _execute(self, job: QueryJob) -> QueryOutcome:
        executor = self._executor
        if executor is None:
            raise ClickHouseError(STD_EXCEPTION, "The server is shutting down")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._engine.execute, job)

    def _headers(self, query_id: str) -> dict[str, str]:
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": "UTC",
            "X-ClickHouse-Server-Display-Name": self._display_name,
        }

    def _result(self, job: QueryJob, outcome: QueryOutcome, query_id: str) -> web.Response:
        headers = self._headers(query_id)
        headers["X-ClickHouse-Timezone"] = job.settings.get("session_timezone") or "UTC"
        headers["X-ClickHouse-Summary"] = json.dumps(outcome.summary(), separators=(",", ":"))
        headers["Content-Type"] = _TEXT
        if job.info.produces_result:
            fmt = job.info.output_format or job.default_format
            headers["X-ClickHouse-Format"] = fmt
            headers["Content-Type"] = content_type(fmt)
        return web.Response(body=outcome.body, headers=headers)

    def _error(self, exc: ClickHouseError, query_id: str) -> web.Response:
        headers = self._headers(query_id)
        headers["X-ClickHouse-Exception-Code"] = str(exc.code)
        headers["Content-Type"] = _TEXT
        return web.Response(status=exc.http_status, body=f"{exc.text}\n", headers=headers)


def content_type(fmt: str) -> str:
    """The Content-Type ClickHouse answers for an output format."""
    name = fmt.lower()
    if name.startswith("json"):
        return "application/json; charset=UTF-8"
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if name.startswith(("pretty", "vertical", "markdown", "values", "xml", "template", "raw")):
        return _TEXT
    return "application/octet-stream"


def serve_forever(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8123,
    users: Sequence[ServerUser] = DEFAULT_USERS,
    *,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> None:
    """Run the server until SIGINT/SIGTERM (blocking; for the CLI)."""
    server = ClickHouseHTTPServer(data_dir, host, port, users, max_body_size=max_body_size)
    asyncio.run(_serve(server))


async def _serve(server: ClickHouseHTTPServer) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stopping.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
            log.debug("cannot handle %s here", sig.name)
    await server.start()
    try:
        await stopping.wait()
    finally:
        await server.stop()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.chserver",
        description="Serve the ClickHouse HTTP interface over a chDB data directory.",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="chDB data directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8123, help="port to bind (8123; 0: any)")
    parser.add_argument(
        "--users-file",
        type=Path,
        help='JSON list of users: [{"name": ..., "password": ..., "readonly": false}]. Default: '
        "TOUCHPOINT_CLICKHOUSE_USER/_PASSWORD (read-write) and TOUCHPOINT_CLICKHOUSE_READONLY_"
        "USER/_PASSWORD (readonly) if set, else the user 'default', empty password, read-write",
    )
    parser.add_argument("--max-body-mib", type=int, default=256, help="request body limit")
    parser.add_argument("--log-level", default="INFO", help="logging level (INFO)")
    return parser.parse_args(argv)


def load_users(path: Path) -> list[ServerUser]:
    """Users from a JSON file (a list of ServerUser objects)."""
    return TypeAdapter(list[ServerUser]).validate_json(path.read_bytes())


def users_from_env(environ: Mapping[str, str]) -> list[ServerUser] | None:
    """The users touchpoint's settings name (``TOUCHPOINT_CLICKHOUSE_[READONLY_]USER`` and
    ``..._PASSWORD``, as ``touchpoint up`` hands them to this process), or None if unset."""
    name = environ.get(f"{_ENV}USER")
    reader = environ.get(f"{_ENV}READONLY_USER")
    if name is None and reader is None:
        return None
    users = [ServerUser(name=name or "default", password=environ.get(f"{_ENV}PASSWORD", ""))]
    if reader and reader != users[0].name:
        password = environ.get(f"{_ENV}READONLY_PASSWORD", "")
        users.append(ServerUser(name=reader, password=password, readonly=True))
    return users


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if args.users_file:
        users: Sequence[ServerUser] = load_users(args.users_file)
    else:
        users = users_from_env(os.environ) or DEFAULT_USERS
    try:
        serve_forever(
            args.data_dir, args.host, args.port, users, max_body_size=args.max_body_mib << 20
        )
    except ClickHouseError as exc:  # e.g. the data directory is in use by another process
        raise SystemExit(f"chserver: {exc.text}") from exc


if __name__ == "__main__":
    main()
