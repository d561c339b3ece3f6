"""The auth chain: a connection's tokens resolved and checked, auth > session > project, with its 401s and 403s.

One chain for every entry point: the HTTP dependencies (app/api/deps.py) wrap these functions, the WebSocket
operations call them per message, and the rate limiter resolves the auth token through `peek_auth`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from app.errors import Forbidden, Unauthorized
from app.identity import api_tokens, tokens
from app.infra.settings import Settings
from app.infra.state import AppState
from app.services import users
from db.tables import User

ACCOUNT_GONE = "Account no longer exists"
NOT_ADMIN = "Administrator access required"


@dataclass(frozen=True)
class Credentials:
    """The tokens a connection carries, as the chain reads them ('' for a token it lacks).

    `project_token` is the stored token meant: a project id stands for this session's activation of it.
    `auth_seen` is set when the rate limiter already resolved `auth_token` on this HTTP request.
    """

    auth_token: str
    session_token: str
    project_token: str
    auth_seen: tuple[tokens.AuthInfo | None] | None = None


@dataclass(frozen=True)
class CallerInfo:
    """Who is asking on the completion path: the user (id and stored preference), session and project."""

    user_id: uuid.UUID
    preference: dict[str, Any]
    session: tokens.SessionInfo
    project: tokens.ProjectInfo


def auth_token_of(conn: HTTPConnection) -> str | None:
    """The auth token from the `auth_token` cookie or an `Authorization: Bearer` header."""
    header = conn.headers.get("authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return conn.cookies.get("auth_token") or None


def _token(conn: HTTPConnection, cookie: str, header: str) -> str | None:
    return conn.cookies.get(cookie) or conn.headers.get(header) or None


def session_token_of(conn: HTTPConnection) -> str:
    """The session token from the `session_token` cookie or the `X-Session-Token` header ('' if none)."""
    return _token(conn, "session_token", "x-session-token") or ""


def project_token_of(conn: HTTPConnection) -> str:
    """The stored project token the caller means ('' if none): the `project_token` cookie or the
    `X-Project-Token` header, where a project id stands for the caller's session's activation of it.
    """
    token = _token(conn, "project_token", "x-project-token") or ""
    return tokens.effective_project_token(token, session_token_of(conn)) if token else ""


_AUTH_SEEN = "c4m.auth"


def credentials_of(conn: HTTPConnection) -> Credentials:
    """The tokens of an HTTP request or WebSocket (cookies or headers), read now."""
    auth_token = auth_token_of(conn) or ""
    # HTTP only: a WebSocket lives on, and each of its operations must see the token as it is now.
    seen = conn.scope.get("state", {}).get(_AUTH_SEEN) if conn.scope["type"] == "http" else None
    return Credentials(
        auth_token,
        session_token_of(conn),
        project_token_of(conn),
        (seen[1],) if seen is not None and seen[0] == auth_token else None,
    )


async def peek_auth(conn: HTTPConnection, redis: Redis, settings: Settings) -> tokens.AuthInfo | None:
    """The user of a connection's auth token (a use: it is renewed), None without a valid one; never raises.

    On an HTTP request the answer is kept, so the chain does not ask Redis again for the same token.
    """
    token = auth_token_of(conn)
    if not token:
        return None
    info = await tokens.resolve_auth(redis, token, settings.auth_token_ttl_s)
    if conn.scope["type"] == "http":
        conn.scope.setdefault("state", {})[_AUTH_SEEN] = (token, info)
    return info


async def authenticate(creds: Credentials, state: AppState) -> tokens.AuthInfo:
    """The authenticated caller (a use: the token is renewed); 401 when it is missing, unknown or expired."""
    if not creds.auth_token:
        raise Unauthorized("Missing auth token: authenticate first")
    if creds.auth_seen is not None:
        info = creds.auth_seen[0]
    else:
        info = await tokens.resolve_auth(state.redis, creds.auth_token, state.settings.auth_token_ttl_s)
    if info is None:
        raise Unauthorized("Invalid or expired auth token: authenticate again")
    return info


async def account(auth: tokens.AuthInfo, db: AsyncSession) -> User:
    """The caller's user row; 401 when the account no longer exists."""
    user = await db.get(User, auth.user_id)
    if user is None:
        raise Unauthorized(ACCOUNT_GONE)
    return user


def admin(user: User) -> User:
    """The user, when an administrator; 403 otherwise."""
    if not user.is_admin:
        raise Forbidden(NOT_ADMIN)
    return user


def _session_token(creds: Credentials) -> str:
    if not creds.session_token:
        raise Unauthorized("Missing session token: acquire a session first")
    return creds.session_token


def _project_token(creds: Credentials) -> str:
    if not creds.project_token:
        raise Unauthorized("Missing project token: create or activate a project first")
    return creds.project_token


def _checked_session(info: tokens.SessionInfo | None, auth: tokens.AuthInfo) -> tokens.SessionInfo:
    if info is None:
        raise Unauthorized("Invalid or expired session token: acquire a session again")
    if info.user_id != auth.user_id:
        raise Forbidden("Session token belongs to another user")
    return info


def _checked_project(info: tokens.ProjectInfo | None, session: tokens.SessionInfo) -> tokens.ProjectInfo:
    if info is None:
        raise Unauthorized("Invalid or expired project token: activate the project again")
    if info.user_id != session.user_id:
        raise Forbidden("Project token belongs to another user")
    return info


async def plugin_session(creds: Credentials, auth: tokens.AuthInfo, state: AppState) -> tokens.SessionInfo:
    """The caller's session (renewed); 401 when missing or expired, 403 when it belongs to another user."""
    token = _session_token(creds)
    info = await tokens.resolve_session(state.redis, token, state.settings.session_token_ttl_s)
    return _checked_session(info, auth)


async def active_project(
    creds: Credentials, session: tokens.SessionInfo, state: AppState
) -> tokens.ProjectInfo:
    """The caller's active project (it lives as long as its session); 401 when missing or gone, 403 when not
    the caller's."""
    token = _project_token(creds)
    return _checked_project(await tokens.resolve_project(state.redis, token), session)


async def identify(
    creds: Credentials, state: AppState, db: AsyncSession, *, need_project: bool
) -> tuple[User, tokens.SessionInfo, tokens.ProjectInfo | None]:
    """User, session and (when needed) project, checked in the order the HTTP dependencies check them."""
    auth = await authenticate(creds, state)
    user = await account(auth, db)
    session = await plugin_session(creds, auth, state)
    project = await active_project(creds, session, state) if need_project else None
    return user, session, project


async def completion_caller(creds: Credentials, state: AppState) -> CallerInfo:
    """User, session and project in one Redis round trip that also renews the session (PostgreSQL only when
    the user's cached copy is missing): the same checks and errors as `identify`, for every keystroke.
    """
    auth = await authenticate(creds, state)
    session_token = _session_token(creds)
    project_token = creds.project_token
    raw_session, raw_project, raw_user = await tokens.read_renewing(
        state.redis,
        [
            tokens.session_key(session_token),
            tokens.project_key(project_token or "-"),
            tokens.user_snapshot_key(auth.user_id),
        ],
        [state.settings.session_token_ttl_s, 0, 0],
    )
    preference = users.snapshot_preference(raw_user)
    if preference is None:
        preference = await users.load_preference(state.sessionmaker, state.redis, auth.user_id)
    if preference is None:
        raise Unauthorized(ACCOUNT_GONE)
    session = _checked_session(tokens.session_from(raw_session, tokens.digest(session_token)), auth)
    _project_token(creds)  # a missing one is a 401 after the session's checks, as in `identify`
    project = _checked_project(tokens.project_from(raw_project), session)
    return CallerInfo(auth.user_id, preference, session, project)


# ---------------------------------------------------------------- API tokens (the /v1 routes)

_API_SEEN = "c4m.api_token"
MISSING_API_TOKEN = (
    "Missing API token: send Authorization: Bearer c4m_... (create one at POST /api/user/tokens)"
)
BAD_API_TOKEN = "Invalid, revoked or expired API token"


@dataclass(frozen=True)
class ApiCaller:
    """Who is asking on a /v1 route: the user of a valid API token, with the user's stored preference."""

    user_id: uuid.UUID
    preference: dict[str, Any]
    token_id: uuid.UUID


def bearer_of(conn: HTTPConnection) -> str:
    """The `Authorization: Bearer` value of a connection ('' without one); API tokens come only this way."""
    header = conn.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


async def peek_api_token(conn: HTTPConnection, state: AppState) -> api_tokens.ApiTokenInfo | None:
    """The API token of a connection, resolved once per HTTP request (the limiter's answer is reused)."""
    token = bearer_of(conn)
    if not token:
        return None
    seen = conn.scope.get("state", {}).get(_API_SEEN)
    if seen is not None and seen[0] == token:
        return seen[1]  # type: ignore[no-any-return]
    settings = state.settings
    info = await api_tokens.resolve(
        state.redis, state.sessionmaker, token, settings.api_token_cache_s, settings.api_token_invalid_cache_s
    )
    conn.scope.setdefault("state", {})[_API_SEEN] = (token, info)
    return info


async def api_caller(conn: HTTPConnection, state: AppState) -> ApiCaller:
    """The caller of a /v1 route; 401 without a valid API token or when the account is gone."""
    if not bearer_of(conn):
        raise Unauthorized(MISSING_API_TOKEN)
    info = await peek_api_token(conn, state)
    if info is None:
        raise Unauthorized(BAD_API_TOKEN)
    preference = users.snapshot_preference(await state.redis.get(tokens.user_snapshot_key(info.user_id)))
    if preference is None:
        preference = await users.load_preference(state.sessionmaker, state.redis, info.user_id)
    if preference is None:
        raise Unauthorized(ACCOUNT_GONE)
    return ApiCaller(info.user_id, preference, info.token_id)
