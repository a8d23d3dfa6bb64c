"""Access to the dashboard: a token, HTTP basic auth, both or neither (settings
``dashboard_token``, ``dashboard_user`` + ``dashboard_password``), and security headers.

With a token, a request passes with ``Authorization: Bearer <token>``, or with the session
cookie the server sets when the page is opened once as ``/?token=<token>`` (the token is then
dropped from the address by a redirect). With basic auth, the browser asks for the user and
password. Without credentials every path but ``/healthz`` answers 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Middleware

from pipeline.errors import ConfigError
from pipeline.settings import Settings

COOKIE = "touchpoint_dashboard"
OPEN_PATHS = frozenset({"/healthz"})
REALM = "touchpoint dashboard"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class DashboardAuth:
    token: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DashboardAuth:
        token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
        password = settings.dashboard_password
        if bool(settings.dashboard_user) != bool(password and password.get_secret_value()):
            raise ConfigError(
                "TOUCHPOINT_DASHBOARD_USER and TOUCHPOINT_DASHBOARD_PASSWORD go together"
            )
        if token is not None and not token.strip():
            raise ConfigError("TOUCHPOINT_DASHBOARD_TOKEN is set but empty")
        return cls(
            token=token,
            user=settings.dashboard_user or None,
            password=password.get_secret_value() if password else None,
        )

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.user)

    @property
    def cookie_value(self) -> str:
        """What the session cookie holds: a digest of the token, never the token itself."""
        key = (self.token or "").encode()
        return hmac.new(key, b"touchpoint-dashboard-session", hashlib.sha256).hexdigest()

    def allows(self, request: web.Request) -> bool:
        if not self.enabled:
            return True
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if self.token:
            if scheme.lower() == "bearer" and _same(value.strip(), self.token):
                return True
            if _same(request.cookies.get(COOKIE, ""), self.cookie_value):
                return True
        if self.user and self.password and scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return _same(user, self.user) & _same(password, self.password)
        return False

    def challenge(self) -> web.Response:
        scheme = "Basic" if self.user else "Bearer"
        return web.json_response(
            {"error": "authentication required"},
            status=401,
            headers={"WWW-Authenticate": f'{scheme} realm="{REALM}", charset="UTF-8"'},
        )

    def token_login(self, request: web.Request) -> web.Response | None:
        """``?token=`` with the right token: a redirect to the same address without it,
        setting the session cookie. None when the request carries no (right) token."""
        given = request.query.get("token")
        if not self.token or given is None or not _same(given, self.token):
            return None
        rest = [(k, v) for k, v in request.query.items() if k != "token"]
        location = request.path + ("?" + urlencode(rest) if rest else "")
        response = web.Response(status=303, headers={"Location": location})
        response.set_cookie(
            COOKIE, self.cookie_value, httponly=True, samesite="Strict", path="/",
            secure=request.secure,
        )  # fmt: skip
        return response


def middleware(auth: DashboardAuth) -> Middleware:
    """Checks every request but OPEN_PATHS; adds the security headers to every answer."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or auth.allows(request):
            response = await handler(request)
        else:
            response = auth.token_login(request) or auth.challenge()
        response.headers.update(SECURITY_HEADERS)
        return response

    return check
