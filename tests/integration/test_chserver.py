"""Integration tests of the embedded ClickHouse HTTP server (real chDB, real clients).

clickhouse-connect's own HTTP client talks to the server exactly as to a ClickHouse
server; urllib checks the raw HTTP surface (status codes, headers, bodies).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from clickhouse_connect.driver.summary import QuerySummary
from pydantic import SecretStr

from pipeline.chserver import ClickHouseHTTPServer, ServerUser
from pipeline.chserver_background import BackgroundServer

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
USERS = (
    ServerUser(name="default"),
    ServerUser(name="writer", password=SecretStr("w-secret")),
    ServerUser(name="reader", password=SecretStr("r-secret"), readonly=True),
)
UTC = dt.UTC
ClientFactory = Callable[..., Client]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(ClickHouseHTTPServer(data_dir, port=0, users=USERS)) as background:
        yield background


@pytest.fixture
def make_client(server: BackgroundServer) -> Iterator[ClientFactory]:
    clients: list[Client] = []

    def make(**kwargs: Any) -> Client:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def db(make_client: ClientFactory) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_client(username="writer", password="w-secret")
    admin.command(f"CREATE DATABASE {name}")
    yield name
    admin.command(f"DROP DATABASE IF EXISTS {name}")


def http(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def query_url(server: BackgroundServer, sql: str, **params: str) -> str:
    return f"{server.url}/?{urllib.parse.urlencode({'query': sql, **params})}"


# --- HTTP surface ---------------------------------------------------------------------------


def test_ping_and_root_answer_ok(server: BackgroundServer) -> None:
    assert http(f"{server.url}/ping")[::2] == (200, b"Ok.\n")
    assert http(f"{server.url}/")[::2] == (200, b"Ok.\n")
    head = urllib.request.Request(f"{server.url}/ping", method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as response:
        assert response.status == 200


def test_response_headers(server: BackgroundServer) -> None:
    status, headers, body = http(query_url(server, "SELECT 1 AS x FORMAT JSONEachRow"))
    assert (status, body) == (200, b'{"x":1}\n')
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert headers["X-ClickHouse-Timezone"] == "UTC"
    assert headers["X-ClickHouse-Query-Id"]
    assert headers["X-ClickHouse-Server-Display-Name"]
    assert '"result_rows":"1"' in headers["X-ClickHouse-Summary"]
    _, headers, body = http(query_url(server, "SELECT timezone()", session_timezone="Asia/Tokyo"))
    assert (headers["X-ClickHouse-Timezone"], body) == ("Asia/Tokyo", b"Asia/Tokyo\n")
    assert http(query_url(server, "SELECT timezone()"))[2] == b"UTC\n"
    _, headers, body = http(query_url(server, "SELECT 2", query_id="my-id", default_format="CSV"))
    assert (headers["X-ClickHouse-Query-Id"], headers["X-ClickHouse-Format"], body) == (
        "my-id",
        "CSV",
        b"2\n",
    )


def test_raw_http_inserts(server: BackgroundServer, db: str) -> None:
    auth = {"X-ClickHouse-User": "writer", "X-ClickHouse-Key": "w-secret"}
    create = f"CREATE TABLE {db}.r (x UInt32, s String) ENGINE = MergeTree ORDER BY x"
    assert http(f"{server.url}/", create.encode(), auth)[0] == 200
    url = query_url(server, f"INSERT INTO {db}.r FORMAT CSV")
    status, headers, _ = http(url, b'1,"a"\n2,"b"\n', auth)
    assert status == 200
    assert '"written_rows":"2"' in headers["X-ClickHouse-Summary"]
    assert "X-ClickHouse-Format" not in headers
    inline = f"INSERT INTO {db}.r FORMAT TSV\n3\tc\n".encode()
    assert http(f"{server.url}/", inline, auth)[0] == 200
    values = query_url(server, f"INSERT INTO {db}.r (x, s) VALUES")
    assert http(values, b"(4, 'd'), (5, 'e')", auth)[0] == 200
    deflated = {**auth, "Content-Encoding": "deflate"}
    assert http(url, zlib.compress(b'6,"f"\n'), deflated)[0] == 200
    select = query_url(server, f"SELECT groupArray(s) FROM (SELECT s FROM {db}.r ORDER BY x)")
    assert http(select, headers=auth)[2] == b"['a','b','c','d','e','f']\n"
    status, headers, _ = http(url, b"not gzip", {**auth, "Content-Encoding": "gzip"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "271")


def test_get_is_readonly_and_multi_statements_are_rejected(server: BackgroundServer) -> None:
    status, headers, body = http(query_url(server, "CREATE DATABASE never_created"))
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")
    assert b"method GET implies readonly" in body
    status, headers, _ = http(f"{server.url}/", b"SELECT 1; SELECT 2")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    status, headers, _ = http(f"{server.url}/", b"")
    assert headers["X-ClickHouse-Exception-Code"] == "62"


def test_body_size_is_bounded(data_dir: Path, server: BackgroundServer) -> None:
    # chDB lets one process open the directory more than once: a second, strict server.
    strict = ClickHouseHTTPServer(data_dir, port=0, max_body_size=64 * 1024)
    with BackgroundServer(strict) as small:
        status, headers, body = http(f"{small.url}/", b"SELECT '" + b"x" * 100_000 + b"'")
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (413, "229")
        assert body.startswith(b"Code: 229. DB::Exception: ")
        assert http(f"{small.url}/", b"SELECT 1")[2] == b"1\n"
    assert http(f"{server.url}/ping")[0] == 200


# --- clickhouse-connect ---------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_query_rows_names_and_types(make_client: ClientFactory, compress: bool) -> None:
    client = make_client(compress=compress)
    result = client.query(
        "SELECT number AS n, toString(number) AS s, [number, 1] AS a, "
        "toLowCardinality('x') AS lc, if(number = 1, NULL, number) AS nul "
        "FROM numbers(3) ORDER BY n"
    )
    assert result.column_names == ("n", "s", "a", "lc", "nul")
    assert [t.name for t in result.column_types] == [
        "UInt64",
        "String",
        "Array(UInt64)",
        "LowCardinality(String)",
        "Nullable(UInt64)",
    ]
    assert result.result_rows == [
        (0, "0", [0, 1], "x", 0),
        (1, "1", [1, 1], "x", None),
        (2, "2", [2, 1], "x", 2),
    ]
    assert client.query("SELECT 1 WHERE 0").result_rows == []
    assert client.server_version and client.server_tz == UTC


def test_query_df_and_arrow(make_client: ClientFactory) -> None:
    pytest.importorskip("pandas", reason="pandas is not installed: query_df cannot be tested")
    pytest.importorskip("pyarrow", reason="pyarrow is not installed: query_arrow cannot be tested")
    client = make_client()
    frame = client.query_df("SELECT number AS n, toString(number) AS s FROM numbers(4)")
    assert list(frame.columns) == ["n", "s"]
    assert frame["n"].tolist() == [0, 1, 2, 3]
    table = client.query_arrow("SELECT number AS n FROM numbers(5)")
    assert table.num_rows == 5
    assert table.column("n").to_pylist() == [0, 1, 2, 3, 4]


TYPED_COLUMNS = (
    "s String, u UInt64, f Float64, n Nullable(Int64), ns Nullable(String), "
    "ts DateTime64(3, 'UTC'), m Map(String, String), lc LowCardinality(String), "
    "a Array(String), lcn LowCardinality(Nullable(String))"
)


def _typed_rows() -> list[list[Any]]:
    base = dt.datetime(2024, 5, 17, 12, 30, 45, 123000, tzinfo=UTC)
    return [
        [
            f"row {i} 'q' \\ \t ü",
            2**63 + i,
            i / 3,
            None if i % 2 else -(10**12) * i,
            None if i % 3 == 0 else f"ns{i}",
            base + dt.timedelta(milliseconds=i * 1001),
            {} if i % 4 == 0 else {"k": str(i), "key two": "v"},
            f"stage{i % 3}",
            [] if i % 5 == 0 else [f"t{i}", "x"],
            None if i % 2 else "lc",
        ]
        for i in range(1000)
    ]


@pytest.mark.parametrize("compress", [True, False, "zstd", "gzip"])
def test_insert_round_trips_types(
    make_client: ClientFactory, db: str, compress: bool | str
) -> None:
    client = make_client(compress=compress, tz_mode="aware")
    client.command(f"CREATE TABLE {db}.typed ({TYPED_COLUMNS}) ENGINE = MergeTree ORDER BY u")
    rows = _typed_rows()
    summary = client.insert(f"{db}.typed", rows)
    assert summary.written_rows == len(rows)
    back = client.query(f"SELECT * FROM {db}.typed ORDER BY u").result_rows
    assert [list(row) for row in back] == rows


def test_command_returns_summaries_and_values(make_client: ClientFactory, db: str) -> None:
    client = make_client(username="writer", password="w-secret")
    created = client.command(f"CREATE TABLE {db}.c (x UInt8) ENGINE = MergeTree ORDER BY x")
    assert isinstance(created, QuerySummary)
    assert created.query_id()
    inserted = client.command(f"INSERT INTO {db}.c SELECT number FROM numbers(7)")
    assert isinstance(inserted, QuerySummary) and inserted.written_rows == 7
    assert client.command(f"SELECT count() FROM {db}.c") == 7
    assert client.command("SELECT 'a', 'b'") == ["a", "b"]
    assert client.command(f"SELECT x FROM {db}.c WHERE x > 100") == ""
    assert client.command(f"EXISTS TABLE {db}.c") == 1


def test_parameters_server_and_client_side(make_client: ClientFactory) -> None:
    client = make_client()
    tricky = "it's a \\ back\tslash\nline ü"
    server_side = client.query(
        "SELECT {name:String} AS s, {n:UInt32} + 1 AS n, {tags:Array(String)} AS t",
        parameters={"name": tricky, "n": 41, "tags": ["a", "b'c"]},
    )
    assert server_side.result_rows == [(tricky, 42, ["a", "b'c"])]
    client_side = client.query(
        "SELECT %(name)s AS s, %(n)s AS n", parameters={"name": tricky, "n": 7}
    )
    assert client_side.result_rows == [(tricky, 7)]
    # Parameters too long for a URL go as a multipart form.
    long_value = "z" * 10_000
    form = client.query("SELECT length({v:String})", parameters={"v": long_value})
    assert form.result_rows == [(10_000,)]


def test_settings_apply_per_request_only(make_client: ClientFactory) -> None:
    client = make_client()
    limited = {"max_result_rows": 5, "result_overflow_mode": "throw"}
    with pytest.raises(DatabaseError) as raised:
        client.query("SELECT number FROM numbers(10)", settings=limited)
    assert raised.value.code == 396
    assert len(client.query("SELECT number FROM numbers(10)").result_rows) == 10
    with pytest.raises(DatabaseError) as unknown:
        client.query("SELECT 1", settings={"no_such_setting_xyz": 1})
    assert unknown.value.code == 115
    # A SET statement does not leak into later requests either.
    client.command("SET max_result_rows = 1, result_overflow_mode = 'throw'")
    assert len(client.query("SELECT number FROM numbers(3)").result_rows) == 3


def test_unknown_table_raises_code_60(server: BackgroundServer, make_client: ClientFactory) -> None:
    with pytest.raises(DatabaseError) as raised:
        make_client().query("SELECT * FROM default.no_such_table_here")
    assert raised.value.code == 60
    status, headers, body = http(query_url(server, "SELECT * FROM default.no_such_table_here"))
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert body.startswith(b"Code: 60. DB::Exception: ")


# --- users ----------------------------------------------------------------------------------


def test_authentication(server: BackgroundServer, make_client: ClientFactory) -> None:
    with pytest.raises(DatabaseError) as raised:
        make_client(username="writer", password="wrong")
    assert raised.value.code == 516
    status, headers, body = http(query_url(server, "SELECT 1", user="ghost", password="x"))
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (401, "516")
    assert body == (
        b"Code: 516. DB::Exception: ghost: Authentication failed: password is incorrect, "
        b"or there is no such user. (AUTHENTICATION_FAILED)\n"
    )
    basic = base64.b64encode(b"writer:w-secret").decode()
    assert (
        http(query_url(server, "SELECT 1"), headers={"Authorization": f"Basic {basic}"})[0] == 200
    )
    assert http(query_url(server, "SELECT 1", user="writer", password="w-secret"))[0] == 200
    headers_auth = {"X-ClickHouse-User": "reader", "X-ClickHouse-Key": "r-secret"}
    assert http(query_url(server, "SELECT 1"), headers=headers_auth)[0] == 200
    assert http(query_url(server, "SELECT 1"), headers={"Authorization": "Basic !!"})[0] == 401


def test_readonly_user(server: BackgroundServer, make_client: ClientFactory, db: str) -> None:
    writer = make_client(username="writer", password="w-secret")
    writer.command(f"CREATE TABLE {db}.ro (x UInt8) ENGINE = MergeTree ORDER BY x")
    writer.insert(f"{db}.ro", [[1], [2]])
    reader = make_client(username="reader", password="r-secret")
    assert reader.query(f"SELECT sum(x) FROM {db}.ro").result_rows == [(3,)]
    assert reader.command(f"SHOW TABLES FROM {db}") == "ro"
    with pytest.raises(DatabaseError) as raised:
        reader.insert(f"{db}.ro", [[3]])
    assert raised.value.code == 164
    for statement in (
        f"INSERT INTO {db}.ro VALUES (4)",
        f"CREATE TABLE {db}.nope (x UInt8) ENGINE = Memory",
        f"DROP TABLE {db}.ro",
        f"TRUNCATE TABLE {db}.ro",
        f"ALTER TABLE {db}.ro DELETE WHERE 1",
        f"/* hidden */ -- comment\n  insert into {db}.ro values (5)",
        f"WITH 1 AS y INSERT INTO {db}.ro SELECT y",
        f"OPTIMIZE TABLE {db}.ro",
        "SYSTEM DROP DNS CACHE",
        "SET max_threads = 1",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
    ):
        with pytest.raises(DatabaseError) as denied:
            reader.command(statement)
        assert denied.value.code == 164, statement
    with pytest.raises(DatabaseError) as multi:
        reader.command(f"SELECT 1; DROP TABLE {db}.ro")
    assert multi.value.code == 62
    assert writer.command(f"SELECT count() FROM {db}.ro") == 2
    # chDB enforces readonly=1 on the reader's connection too: no settings changes either.
    reader_auth = {"X-ClickHouse-User": "reader", "X-ClickHouse-Key": "r-secret"}
    status, headers, _ = http(query_url(server, "SELECT 1", max_threads="1"), b"", reader_auth)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")
    # readonly=1 as a URL parameter makes a writer's request readonly.
    insert = f"INSERT INTO {db}.ro VALUES (9)".encode()
    writer_auth = {"X-ClickHouse-User": "writer", "X-ClickHouse-Key": "w-secret"}
    assert http(query_url(server, "", readonly="1"), insert, writer_auth)[0] == 403
    assert http(f"{server.url}/", insert, writer_auth)[0] == 200


# --- concurrency, performance, lifecycle ----------------------------------------------------


def test_ping_is_served_during_a_long_query(
    server: BackgroundServer, make_client: ClientFactory
) -> None:
    client = make_client()
    long_query = threading.Thread(
        target=client.query,
        args=("SELECT sleepEachRow(0.5) FROM numbers(4) SETTINGS max_block_size = 1",),
    )
    started = time.monotonic()
    long_query.start()
    time.sleep(0.3)
    ping_started = time.monotonic()
    assert http(f"{server.url}/ping")[0] == 200
    ping_seconds = time.monotonic() - ping_started
    long_query.join()
    assert time.monotonic() - started >= 1.9
    assert ping_seconds < 1.0


def test_concurrent_clients(server: BackgroundServer, make_client: ClientFactory, db: str) -> None:
    make_client().command(f"CREATE TABLE {db}.cc (w UInt8, i UInt32) ENGINE = MergeTree ORDER BY w")

    def work(worker: int) -> str:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
        try:
            for batch in range(10):
                client.insert(f"{db}.cc", [[worker, batch * 100 + i] for i in range(100)])
                client.query(f"SELECT count() FROM {db}.cc WHERE w = {worker}")
            return str(client.command(f"SELECT count() FROM {db}.cc WHERE w = {worker}"))
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(work, range(8))) == ["1000"] * 8


WIDE_COLUMNS = (
    ("event_id", "String"), ("user_id", "UInt64"), ("session_id", "String"),
    ("ts", "DateTime64(3, 'UTC')"), ("stage", "LowCardinality(String)"),
    ("channel", "LowCardinality(String)"), ("value", "Float64"), ("amount", "Nullable(Float64)"),
    ("attrs", "Map(String, String)"), ("tags", "Array(String)"),
    ("country", "LowCardinality(String)"), ("device", "String"), ("version", "UInt32"),
    ("score", "Float32"), ("ok", "UInt8"),
)  # fmt: skip


def test_insert_throughput(
    make_client: ClientFactory, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = make_client()
    columns = ", ".join(f"{name} {type_}" for name, type_ in WIDE_COLUMNS)
    client.command(f"CREATE TABLE {db}.wide ({columns}) ENGINE = MergeTree ORDER BY user_id")
    client.command(f"CREATE TABLE {db}.wide2 AS {db}.wide")
    base = dt.datetime(2024, 1, 1, tzinfo=UTC)
    rows = [
        [f"e{i}", i, f"s{i % 997}", base + dt.timedelta(milliseconds=i), f"stage{i % 5}", "web",
         i * 0.5, None if i % 3 == 0 else float(i), {"k": str(i % 7)}, ["a", "b"], "US", "ios",
         3, 0.5, 1]
        for i in range(100_000)
    ]  # fmt: skip
    names = [name for name, _ in WIDE_COLUMNS]
    started = time.perf_counter()
    for offset in range(0, len(rows), 10_000):
        client.insert(f"{db}.wide", rows[offset : offset + 10_000], column_names=names)
    client_rate = len(rows) / (time.perf_counter() - started)
    native = client.raw_query(f"SELECT * FROM {db}.wide LIMIT 10000", fmt="Native")
    started = time.perf_counter()
    for _ in range(10):
        client.raw_insert(f"{db}.wide2", names, native, fmt="Native")
    server_rate = 100_000 / (time.perf_counter() - started)
    with capsys.disabled():
        print(
            f"\n[chserver] 100k rows x 15 columns in 10k-row inserts: "
            f"{client_rate:,.0f} rows/s via client.insert (incl. client encoding), "
            f"{server_rate:,.0f} rows/s for pre-encoded Native blocks"
        )
    assert client.command(f"SELECT count() FROM {db}.wide") == 100_000
    assert client.command(f"SELECT count() FROM {db}.wide2") == 100_000


def test_data_persists_across_restart(server: BackgroundServer, make_client: ClientFactory) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = make_client()
    client.command(f"CREATE DATABASE {name}")
    client.command(f"CREATE TABLE {name}.p (x UInt32) ENGINE = MergeTree ORDER BY x")
    client.insert(f"{name}.p", [[i] for i in range(123)])
    port = server.port
    server.stop()
    assert not server.server.running
    server.start()
    assert server.port == port
    fresh = make_client()
    assert fresh.command(f"SELECT count() FROM {name}.p") == 123
    fresh.command(f"DROP DATABASE {name}")


def test_cli(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TOUCHPOINT_CLICKHOUSE_USER": "writer",
        "TOUCHPOINT_CLICKHOUSE_PASSWORD": "pw",
        "TOUCHPOINT_CLICKHOUSE_READONLY_USER": "viewer",
        "TOUCHPOINT_CLICKHOUSE_READONLY_PASSWORD": "vpw",
    }
    command = [sys.executable, "-m", "pipeline.chserver"]
    shown = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, env=env, check=True
    )
    assert "--data-dir" in shown.stdout
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [*command, "--data-dir", str(tmp_path / "cli"), "--port", str(port)]
    process = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_ping(f"{url}/ping", process)
        writer = {"X-ClickHouse-User": "writer", "X-ClickHouse-Key": "pw"}
        viewer = {"X-ClickHouse-User": "viewer", "X-ClickHouse-Key": "vpw"}
        assert http(f"{url}/", b"SELECT 40 + 2", writer)[2] == b"42\n"
        assert http(f"{url}/", b"CREATE DATABASE cli_db", writer)[0] == 200
        assert http(f"{url}/", b"CREATE DATABASE cli_db2", viewer)[0] == 403
        assert http(f"{url}/", b"SELECT 1")[0] == 401  # no 'default' user configured
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def _wait_for_ping(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        try:
            if http(url)[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("the CLI server did not start")
