"""Turning an HTTP request of the ClickHouse interface into a :class:`QueryJob`.

The query comes from the ``query`` URL parameter, the body, or both (the URL parameter
begins the query and the body continues it: for ``INSERT ... FORMAT <fmt>`` the body is
then the data). ``param_<name>`` parameters bind ``{name:Type}`` placeholders, other URL
parameters are settings, except the transport ones clickhouse-connect and curl send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import BodyPartReader, web
from multidict import MultiMapping

from pipeline.chserver_auth import ServerUser
from pipeline.chserver_codec import body_too_large, decompress_body
from pipeline.chserver_engine import QueryJob
from pipeline.chserver_errors import NOT_IMPLEMENTED, SYNTAX_ERROR, ClickHouseError
from pipeline.chserver_sql import InsertData, StatementInfo, analyze, check_statement

# Request parameters that are not settings (consumed here, or meaningless for this server).
_TRANSPORT_PARAMS = frozenset(
    {
        "query", "database", "default_format", "user", "password", "query_id", "session_id",
        "session_timeout", "session_check", "buffer_size", "wait_end_of_query",
        "client_protocol_version", "role", "quota_key", "compress", "decompress",
    }
)  # fmt: skip
# HTTP-transport settings: harmless to ignore, as responses are sent whole and uncompressed.
_IGNORED_SETTINGS = frozenset(
    {
        "send_progress_in_http_headers", "http_headers_progress_interval_ms",
        "enable_http_compression", "http_zlib_compression_level",
        "cancel_http_readonly_queries_on_client_close", "http_wait_end_of_query",
        "http_response_buffer_size", "add_http_cors_header",
        "http_native_compression_disable_checksumming_on_decompress",
    }
)  # fmt: skip
_GET_IS_READONLY = (
    "For queries over HTTP, method GET implies readonly. "
    "You should use method POST for modifying queries"
)


@dataclass(frozen=True, slots=True)
class _Form:
    query: bytes
    params: dict[str, str]


async def build_job(request: web.Request, user: ServerUser, max_body_size: int) -> QueryJob:
    """Read, decompress and analyse a query request; the lexical readonly check included."""
    args = request.query
    _reject_native_compression(args)
    url_query = args.get("query", "").encode()
    params = _bind_params(args)
    if request.content_type == "multipart/form-data":
        form = await _read_form(request, max_body_size)
        url_query = form.query or url_query
        params.update(form.params)
        chunks: list[bytes] = []
    else:
        chunks = await _read_chunks(request, max_body_size)
    statement, info, data = split_statement(url_query, chunks)
    requested, settings = _settings(args)
    readonly = 1 if user.readonly else requested
    by_get = not readonly and request.method == "GET"
    readonly = 2 if by_get else readonly  # like ClickHouse: GET reads only, settings allowed
    check_statement(info, readonly=bool(readonly), reason=_GET_IS_READONLY if by_get else "")
    return QueryJob(
        statement=statement,
        info=info,
        database=_option(request, "database", "X-ClickHouse-Database", "default"),
        default_format=_option(request, "default_format", "X-ClickHouse-Format", "TabSeparated"),
        params=params,
        settings=settings,
        insert_format=info.insert.format_name if info.insert else None,
        data=data,
        readonly=readonly,
    )


def _option(request: web.Request, param: str, header: str, default: str) -> str:
    """A URL parameter, else its request header, else the default."""
    return request.query.get(param) or request.headers.get(header) or default


def _reject_native_compression(args: Mapping[str, str]) -> None:
    for name in ("compress", "decompress"):
        if args.get(name, "0") not in ("0", ""):
            raise ClickHouseError(
                NOT_IMPLEMENTED,
                f"'{name}=1' (ClickHouse block compression) is not supported by this server; "
                "use Content-Encoding / Accept-Encoding instead",
            )


def _bind_params(args: Mapping[str, str]) -> dict[str, str]:
    return {name[6:]: value for name, value in args.items() if name.startswith("param_")}


def _settings(args: MultiMapping[str]) -> tuple[int, dict[str, str]]:
    """(the readonly level requested, the settings to apply) from the URL parameters."""
    readonly = 0
    settings: dict[str, str] = {}
    for name, value in args.items():
        if name in _TRANSPORT_PARAMS or name in _IGNORED_SETTINGS or name.startswith("param_"):
            continue
        if name == "readonly":
            readonly = 2 if value.strip() == "2" else int(value.strip() not in ("0", ""))
            continue
        settings[name] = value
    return readonly, settings


async def _read_chunks(request: web.Request, limit: int) -> list[bytes]:
    """The request body, decoded per its Content-Encoding (off the event loop if needed)."""
    body = await _read_body(request, limit)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return [body] if body else []
    return await asyncio.to_thread(decompress_body, body, encoding, limit)


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
        if total > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_form(request: web.Request, limit: int) -> _Form:
    """A multipart form (clickhouse-connect's form encoding): ``query`` and ``param_*``."""
    query = b""
    params: dict[str, str] = {}
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.filename is not None:
            raise ClickHouseError(NOT_IMPLEMENTED, "External data tables are not supported")
        value = bytes(await part.read())
        total += len(value)
        if total > limit:
            raise body_too_large(limit)
        if part.name == "query":
            query = value
        elif part.name and part.name.startswith("param_"):
            params[part.name[6:]] = value.decode(errors="replace")
    return _Form(query, params)


def split_statement(
    url_query: bytes, chunks: list[bytes]
) -> tuple[bytes, StatementInfo, list[bytes]]:
    """(statement, its analysis, inline INSERT data chunks) of a URL query and body."""
    if url_query:
        info = analyze(url_query)
        if info.insert is not None:
            head = url_query[info.insert.data_offset :]
            return info.insert.statement, info, [head, *chunks] if head else chunks
        if chunks:
            return _split_text(url_query + b"\n" + b"".join(chunks))
        return url_query, info, []
    if not chunks:
        raise ClickHouseError(SYNTAX_ERROR, "Empty query")
    first = _split_first_chunk(chunks)
    return first if first is not None else _split_text(b"".join(chunks))


def _split_first_chunk(chunks: list[bytes]) -> tuple[bytes, StatementInfo, list[bytes]] | None:
    """Split an INSERT whose statement lies within the first chunk without joining chunks."""
    head = chunks[0]
    if len(chunks) == 1:
        return None
    try:
        info = analyze(head)
    except ClickHouseError:  # the statement may continue in the next chunk
        return None
    insert = info.insert
    if insert is None or not _complete_within(insert, head):
        return None
    return insert.statement, info, [head[insert.data_offset :], *chunks[1:]]


def _complete_within(insert: InsertData, head: bytes) -> bool:
    # The format name and the blanks after it must be followed by data in the same chunk.
    return insert.data_offset < len(head)


def _split_text(text: bytes) -> tuple[bytes, StatementInfo, list[bytes]]:
    info = analyze(text)
    if info.insert is None:
        return text, info, []
    data = text[info.insert.data_offset :]
    return info.insert.statement, info, [data] if data else []
