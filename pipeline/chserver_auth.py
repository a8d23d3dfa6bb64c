"""Users and authentication for the embedded ClickHouse HTTP server.

chDB has no access control of its own (it refuses CREATE USER), so users live in the
server's configuration. Credentials are taken the ways ClickHouse's HTTP interface accepts
them: HTTP basic auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` headers, or ``user``/
``password`` URL parameters; a request with none of them is the ``default`` user.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pipeline.chserver_errors import auth_error


class ServerUser(BaseModel):
    """A user of the embedded server; ``readonly`` users may only read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    password: SecretStr = SecretStr("")
    readonly: bool = False


DEFAULT_USERS: tuple[ServerUser, ...] = (ServerUser(name="default"),)


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str = ""


def extract_credentials(headers: Mapping[str, str], params: Mapping[str, str]) -> Credentials:
    """Credentials of a request, in ClickHouse's order of precedence."""
    authorization = headers.get("Authorization")
    if authorization is not None:
        return _basic_credentials(authorization)
    user = headers.get("X-ClickHouse-User")
    if user:
        return Credentials(user, headers.get("X-ClickHouse-Key", ""))
    if "user" in params:
        return Credentials(params["user"] or "default", params.get("password", ""))
    return Credentials("default", params.get("password", ""))


def _basic_credentials(authorization: str) -> Credentials:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise auth_error("default")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise auth_error("default") from None
    user, _, password = decoded.partition(":")
    return Credentials(user or "default", password)


class UserRegistry:
    """The configured users; authenticates credentials in constant time per password."""

    def __init__(self, users: Sequence[ServerUser]) -> None:
        names = [user.name for user in users]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate server users: {', '.join(duplicates)}")
        self._users = {user.name: user for user in users}

    def authenticate(self, credentials: Credentials) -> ServerUser:
        user = self._users.get(credentials.user)
        expected = user.password.get_secret_value() if user is not None else ""
        matches = hmac.compare_digest(expected.encode(), credentials.password.encode())
        if user is None or not matches:
            raise auth_error(credentials.user)
        return user
