"""Request-body decompression for the embedded ClickHouse HTTP server.

clickhouse-connect compresses insert bodies (``Content-Encoding`` lz4 by default, else zstd,
br, gzip) one block at a time, so a body is a sequence of concatenated frames. Bodies are
decompressed incrementally into a list of chunks (fed to chDB one by one, never joined),
with the total output bounded so a small body cannot expand without limit.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable
from typing import Final, Protocol

import lz4.frame  # type: ignore[import-untyped]  # lz4 ships no type information
from backports import zstd

from pipeline.chserver_errors import (
    CANNOT_DECOMPRESS,
    QUERY_IS_TOO_LARGE,
    UNKNOWN_COMPRESSION_METHOD,
    ClickHouseError,
)

_INPUT_STEP: Final = 1 << 20


class _Decompressor(Protocol):
    """The incremental API shared by lz4.frame, zstd and (adapted) zlib decompressors."""

    @property
    def eof(self) -> bool: ...

    @property
    def needs_input(self) -> bool: ...

    @property
    def unused_data(self) -> bytes | None: ...  # lz4 answers None when there is none

    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes: ...


class _ZlibDecompressor:
    """zlib's decompressobj behind the needs_input/max_length API of the others."""

    def __init__(self, wbits: int) -> None:
        self._obj = zlib.decompressobj(wbits)

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def needs_input(self) -> bool:
        return not self._obj.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    def decompress(self, data: bytes | memoryview, max_length: int = -1) -> bytes:
        source = data if len(data) else self._obj.unconsumed_tail
        return self._obj.decompress(source, max(max_length, 0))


def _deflate_factory(data: bytes) -> Callable[[], _Decompressor]:
    # HTTP "deflate" is the zlib format; some clients send a raw deflate stream instead.
    zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    return lambda: _ZlibDecompressor(wbits)


def _factory(encoding: str, data: bytes) -> Callable[[], _Decompressor] | None:
    if encoding == "lz4":
        return lambda: lz4.frame.LZ4FrameDecompressor()
    if encoding == "zstd":
        return zstd.ZstdDecompressor
    if encoding in ("gzip", "x-gzip"):
        return lambda: _ZlibDecompressor(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return _deflate_factory(data)
    return None


def decompress_body(data: bytes, encoding: str | None, limit: int) -> list[bytes]:
    """Decode a request body per its Content-Encoding into chunks totalling <= ``limit``."""
    name = (encoding or "").strip().lower()
    if name in ("", "identity"):
        return [data] if data else []
    if name == "br":
        return _brotli(data, limit)
    factory = _factory(name, data)
    if factory is None:
        raise ClickHouseError(
            UNKNOWN_COMPRESSION_METHOD, f"Unknown Content-Encoding of HTTP request: {encoding}"
        )
    try:
        return _decode_frames(memoryview(data), factory, limit)
    except ClickHouseError:
        raise
    except Exception as exc:  # each codec has its own error types
        raise ClickHouseError(
            CANNOT_DECOMPRESS, f"Cannot decompress {name} request body: {exc}"
        ) from exc


class _Output:
    """Decompressed chunks, bounded in total size."""

    def __init__(self, limit: int) -> None:
        self.chunks: list[bytes] = []
        self.total = 0
        self.limit = limit

    @property
    def room(self) -> int:
        """How much more output to ask for: one byte past the limit detects overflow."""
        return self.limit - self.total + 1

    def add(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > self.limit:
            raise body_too_large(self.limit, "decompressed ")
        if data:
            self.chunks.append(data)


def _decode_frames(
    view: memoryview, factory: Callable[[], _Decompressor], limit: int
) -> list[bytes]:
    output = _Output(limit)
    pos = 0
    while pos < len(view):
        pos = _decode_frame(factory(), view, pos, output)
    return output.chunks


def _decode_frame(decompressor: _Decompressor, view: memoryview, pos: int, output: _Output) -> int:
    """Decode the frame starting at ``pos`` into ``output``; return where the next starts."""
    while not decompressor.eof:
        piece: bytes | memoryview = b""
        if decompressor.needs_input:
            if pos >= len(view):
                raise ClickHouseError(CANNOT_DECOMPRESS, "Truncated compressed request body")
            piece = view[pos : pos + _INPUT_STEP]
            pos += len(piece)
        data = decompressor.decompress(piece, output.room)
        if not data and not piece:
            raise ClickHouseError(CANNOT_DECOMPRESS, "Compressed request body makes no progress")
        output.add(data)
    return pos - len(decompressor.unused_data or b"")


def _brotli(data: bytes, limit: int) -> list[bytes]:
    try:
        brotli = importlib.import_module("brotli")
    except ImportError:
        raise ClickHouseError(
            UNKNOWN_COMPRESSION_METHOD, "Content-Encoding br needs the brotli package"
        ) from None
    try:
        output = bytes(brotli.decompress(data))
    except Exception as exc:  # brotli.error
        raise ClickHouseError(CANNOT_DECOMPRESS, f"Cannot decompress br body: {exc}") from exc
    if len(output) > limit:
        raise body_too_large(limit, "decompressed ")
    return [output] if output else []


def body_too_large(limit: int, what: str = "") -> ClickHouseError:
    return ClickHouseError(
        QUERY_IS_TOO_LARGE, f"The {what}request body exceeds the limit of {limit} bytes"
    )
