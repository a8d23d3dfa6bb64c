"""ClickHouse-style errors for the embedded HTTP server (see :mod:`pipeline.chserver`).

Every failure the server reports carries a ClickHouse numeric error code, is rendered as
``Code: <n>. DB::Exception: <message>`` and maps to the HTTP status ClickHouse itself uses,
so clickhouse-connect raises ``DatabaseError`` with the right ``code``.
"""

from __future__ import annotations

import re
from typing import Final

UNSUPPORTED_METHOD: Final = 1
SYNTAX_ERROR: Final = 62
UNKNOWN_COMPRESSION_METHOD: Final = 89
NOT_IMPLEMENTED: Final = 48
UNKNOWN_SETTING: Final = 115
READONLY: Final = 164
QUERY_IS_TOO_LARGE: Final = 229
CANNOT_DECOMPRESS: Final = 271
INTO_OUTFILE_NOT_ALLOWED: Final = 433
AUTHENTICATION_FAILED: Final = 516
STD_EXCEPTION: Final = 1001

_NAMES: Final[dict[int, str]] = {
    UNSUPPORTED_METHOD: "UNSUPPORTED_METHOD",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    UNKNOWN_COMPRESSION_METHOD: "UNKNOWN_COMPRESSION_METHOD",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    UNKNOWN_SETTING: "UNKNOWN_SETTING",
    READONLY: "READONLY",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE",
    CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS",
    INTO_OUTFILE_NOT_ALLOWED: "INTO_OUTFILE_NOT_ALLOWED",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    STD_EXCEPTION: "STD_EXCEPTION",
}

# The HTTP status ClickHouse's HTTPHandler answers for an exception code; anything else is 500.
_HTTP_STATUS: Final[dict[int, int]] = {
    **dict.fromkeys((192, 194, AUTHENTICATION_FAILED), 401),
    **dict.fromkeys((READONLY, 497), 403),
    **dict.fromkeys(
        (6, 8, 16, 25, 26, 27, 36, 37, 38, 41, 42, 43, 53, SYNTAX_ERROR, 69, 72, 80),
        400,
    ),
    **dict.fromkeys((UNKNOWN_COMPRESSION_METHOD, 117, CANNOT_DECOMPRESS, 456, 457, 471), 400),
    **dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 78, 81, UNKNOWN_SETTING, 152, 336), 404),
    QUERY_IS_TOO_LARGE: 413,
    NOT_IMPLEMENTED: 501,
}

_ENGINE_CODE_RE: Final = re.compile(r"Code:\s*(\d+)\.")


class ClickHouseError(Exception):
    """A failure reported to the client the way ClickHouse reports it."""

    def __init__(self, code: int, message: str, *, text: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._text = text

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)

    @property
    def text(self) -> str:
        """The response body (without the trailing newline)."""
        if self._text is not None:
            return self._text
        name = _NAMES.get(self.code)
        suffix = f" ({name})" if name else ""
        return f"Code: {self.code}. DB::Exception: {self.message}.{suffix}"

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        """Wrap a chDB exception, keeping ClickHouse's own code and message text."""
        text = str(exc).strip()
        match = _ENGINE_CODE_RE.search(text)
        if match is None:
            return cls(STD_EXCEPTION, text or type(exc).__name__)
        return cls(int(match.group(1)), text, text=text[match.start() :])


def readonly_error(detail: str = "") -> ClickHouseError:
    message = "Cannot execute query in readonly mode"
    return ClickHouseError(READONLY, f"{message}{'. ' + detail if detail else ''}")


def auth_error(user: str) -> ClickHouseError:
    return ClickHouseError(
        AUTHENTICATION_FAILED,
        f"{user}: Authentication failed: password is incorrect, or there is no such user",
    )
