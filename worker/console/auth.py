"""Who is asking, and may they: sign-in tokens, server-side sessions, CSRF and the two roles.

Every request is authenticated except the sign-in form itself and the package's static assets (htmx, the
stylesheet: no data). A browser signs in once with its token and then carries an HttpOnly, SameSite=Strict
session cookie; a script may send ``Authorization: Bearer <token>`` instead. A state-changing request is a
POST, and a cookie-borne one must carry the session's CSRF token (form field ``csrf`` or header
``X-CSRF-Token``) and, when the browser says where it comes from (``Origin``, ``Sec-Fetch-Site``), come from
this site. Operators act; viewers see the same pages without action buttons, and their POSTs are refused.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import TypeAdapter, ValidationError

from worker.settings import ConsoleSettings, ConsoleUser

SESSION_COOKIE = "dms_console_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
SESSION_LIFETIME_S = 8 * 3600
OPEN_PATHS = ("/signin",)
STATIC_PREFIX = "/static/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NoConsoleUsers(ValueError):
    """The console would let nobody in, or cannot read who may."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def acts(self) -> bool:
        return self.role == "operator"


@dataclass
class Session:
    user: User
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    expires: float = field(default_factory=lambda: time.monotonic() + SESSION_LIFETIME_S)


def console_users(settings: ConsoleSettings) -> dict[str, ConsoleUser]:
    """``CONSOLE_USERS`` plus those of ``CONSOLE_USERS_FILE`` (the file wins for a name in both)."""
    users = dict(settings.console_users)
    if settings.console_users_file is not None:
        try:
            text = settings.console_users_file.read_text()
            users |= TypeAdapter(dict[str, ConsoleUser]).validate_python(json.loads(text))
        except (OSError, ValueError, ValidationError) as exc:
            kind = type(exc).__name__  # never the content: it holds tokens
            raise NoConsoleUsers(
                f"cannot read console users from {settings.console_users_file} ({kind}); it must hold JSON like "
                '{"alice": {"role": "operator", "token": "<16+ characters>"}}'
            ) from None
    if not users:
        raise NoConsoleUsers(
            "the console has no users: set DMS_WORKER_CONSOLE_USERS or DMS_WORKER_CONSOLE_USERS_FILE, e.g. "
            '{"alice": {"role": "operator", "token": "<16+ characters>"}, "bob": {"role": "viewer", ...}}'
        )
    return users


class Gate:
    """Tokens to users, sessions to users; pure but for the clock."""

    def __init__(self, users: Mapping[str, ConsoleUser]) -> None:
        self._users = dict(users)
        self._sessions: dict[str, Session] = {}

    def user_with_token(self, token: str) -> User | None:
        found = None
        for name, user in self._users.items():  # every one compared, in constant time each
            if hmac.compare_digest(token.encode(), user.token.get_secret_value().encode()):
                found = User(name, user.role)
        return found

    def open_session(self, user: User) -> tuple[str, Session]:
        self._sessions = {sid: s for sid, s in self._sessions.items() if s.expires > time.monotonic()}
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = Session(user)
        return sid, self._sessions[sid]

    def session(self, sid: str | None) -> Session | None:
        session = self._sessions.get(sid) if sid else None
        return session if session is not None and session.expires > time.monotonic() else None

    def close_session(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)


def same_site(request: web.Request) -> bool:
    """Pure: a browser that says where the request comes from says it is this site."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in {"same-origin", "none"}:
        return False
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # with no-referrer a form POST says Origin: null
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def middleware(gate: Gate, refuse: Callable[[web.Request, int, str], web.StreamResponse]) -> Middleware:
    """The aiohttp middleware: sets ``request["user"]`` and ``request["session"]``, or answers 401/403."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await _checked(request, handler)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _checked(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(STATIC_PREFIX):
            return await handler(request)
        if request.path in OPEN_PATHS:
            if request.method == "POST" and not same_site(request):
                return refuse(request, 403, "cross-site request refused")
            return await handler(request)
        bearer = request.headers.get("Authorization", "")
        if bearer.startswith("Bearer "):
            user = gate.user_with_token(bearer.removeprefix("Bearer ").strip())
            if user is None:
                return refuse(request, 401, "unknown token")
            request["user"], request["session"] = user, None
        else:
            session = gate.session(request.cookies.get(SESSION_COOKIE))
            if session is None:
                return refuse(request, 401, "sign in first")
            request["user"], request["session"] = session.user, session
            if request.method not in {"GET", "HEAD"}:
                if not same_site(request):
                    return refuse(request, 403, "cross-site request refused")
                if not await _csrf_ok(request, session):
                    return refuse(request, 403, "the form's CSRF token is missing or stale: reload the page")
        if request.method not in {"GET", "HEAD"} and not request["user"].acts and request.path != "/signout":
            return refuse(request, 403, f"{request['user'].name} has the viewer role: looking only")
        return await handler(request)

    async def _csrf_ok(request: web.Request, session: Session) -> bool:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}:
            form = await request.post()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        return sent is not None and hmac.compare_digest(sent.encode(), session.csrf.encode())

    return check


def signed_in(response: web.StreamResponse, request: web.Request, sid: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        max_age=SESSION_LIFETIME_S,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
