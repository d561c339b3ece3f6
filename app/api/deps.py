"""FastAPI dependencies: state, database session, and the caller's user, session and project."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col
from starlette.requests import HTTPConnection

from app.errors import Forbidden, Unauthorized
from app.identity import tokens
from app.infra.settings import Settings
from app.infra.state import AppState
from db.tables import User


# The trivial dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its
# thread pool, a thread hop per request (and per dependency) on the completion path.
async def get_state(request: HTTPConnection) -> AppState:
    """The ingress state stored on the app at startup."""
    return request.app.state.c4m


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings_dep(state: StateDep) -> Settings:
    """The settings of this ingress."""
    return state.settings


async def get_redis(state: StateDep) -> Redis:
    """The shared Redis client."""
    return state.redis


async def get_db(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One database session per request (transactions are opened by the services)."""
    async with state.sessionmaker() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RedisDep = Annotated[Redis, Depends(get_redis)]
DbDep = Annotated[AsyncSession, Depends(get_db)]


def auth_token_of(request: HTTPConnection) -> str | None:
    """The auth token from the `auth_token` cookie or an `Authorization: Bearer` header."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    return request.cookies.get("auth_token") or None


def _token(request: HTTPConnection, cookie: str, header: str) -> str | None:
    return request.cookies.get(cookie) or request.headers.get(header) or None


def session_token_of(request: HTTPConnection) -> str:
    """The session token from the `session_token` cookie or the `X-Session-Token` header ('' if none)."""
    return _token(request, "session_token", "x-session-token") or ""


_AUTH_SEEN = "c4m.auth"


def remember_auth(conn: HTTPConnection, token: str, info: tokens.AuthInfo | None) -> None:
    """Keep an auth token's resolution on an HTTP request (the rate limiter resolves it first)."""
    if conn.scope["type"] == "http":
        conn.scope.setdefault("state", {})[_AUTH_SEEN] = (token, info)


def _remembered_auth(conn: HTTPConnection, token: str) -> tuple[bool, tokens.AuthInfo | None]:
    # HTTP only: a WebSocket lives on, and each of its operations must see the token as it is now.
    seen = conn.scope.get("state", {}).get(_AUTH_SEEN) if conn.scope["type"] == "http" else None
    if seen is not None and seen[0] == token:
        return True, seen[1]
    return False, None


async def current_auth(request: HTTPConnection, redis: RedisDep, settings: SettingsDep) -> tokens.AuthInfo:
    """The authenticated caller (a use: the token is renewed); 401 when it is missing, unknown or expired."""
    token = auth_token_of(request)
    if not token:
        raise Unauthorized("Missing auth token: authenticate first")
    known, info = _remembered_auth(request, token)
    if not known:
        info = await tokens.resolve_auth(redis, token, settings.auth_token_ttl_s)
    if info is None:
        raise Unauthorized("Invalid or expired auth token: authenticate again")
    return info


AuthDep = Annotated[tokens.AuthInfo, Depends(current_auth)]


async def current_user(auth: AuthDep, db: DbDep) -> User:
    """The caller's user row; 401 when the account no longer exists."""
    user = await db.get(User, auth.user_id)
    if user is None:
        raise Unauthorized("Account no longer exists")
    return user


UserDep = Annotated[User, Depends(current_user)]


async def current_session(
    request: HTTPConnection, auth: AuthDep, redis: RedisDep, settings: SettingsDep
) -> tokens.SessionInfo:
    """The caller's session (renewed); 401 when missing or expired, 403 when it belongs to another user."""
    token = session_token_of(request)
    if not token:
        raise Unauthorized("Missing session token: acquire a session first")
    return _checked_session(await tokens.resolve_session(redis, token, settings.session_token_ttl_s), auth)


SessionDep = Annotated[tokens.SessionInfo, Depends(current_session)]


def project_token_of(request: HTTPConnection) -> str:
    """The stored project token the caller means ('' if none): the `project_token` cookie or the
    `X-Project-Token` header, where a project id stands for the caller's session's activation of it.
    """
    token = _token(request, "project_token", "x-project-token") or ""
    return tokens.effective_project_token(token, session_token_of(request)) if token else ""


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


async def current_project(
    request: HTTPConnection, session: SessionDep, redis: RedisDep
) -> tokens.ProjectInfo:
    """The caller's active project (it lives as long as its session); 401 when missing or gone, 403 when not
    the caller's."""
    token = project_token_of(request)
    if not token:
        raise Unauthorized("Missing project token: create or activate a project first")
    return _checked_project(await tokens.resolve_project(redis, token), session)


ProjectDep = Annotated[tokens.ProjectInfo, Depends(current_project)]

# How long the hot paths may use a cached copy of a user's preference. A change through the API
# overwrites the copy after its commit (users.update) and account deletion removes it; readers only
# fill a missing copy (SET NX), so a reader that read PostgreSQL before a change cannot put the old
# value back. The TTL only bounds changes made directly in PostgreSQL.
USER_SNAPSHOT_TTL_S = 300


@dataclass(frozen=True)
class Caller:
    """Who is asking on the completion path: the user (id and stored preference), session and project."""

    user_id: uuid.UUID
    preference: dict[str, Any]
    session: tokens.SessionInfo
    project: tokens.ProjectInfo


async def store_user_snapshot(redis: Redis, user_id: uuid.UUID, preference: dict[str, Any] | None) -> None:
    """Overwrite the cached copy of a user's preference after a committed change."""
    await redis.set(tokens.user_snapshot_key(user_id), json.dumps(preference or {}), ex=USER_SNAPSHOT_TTL_S)


async def _user_preference(state: AppState, user_id: uuid.UUID) -> dict[str, Any]:
    """The user's stored preference from PostgreSQL (401 when the account is gone), cached in Redis."""
    async with state.sessionmaker() as db:
        row = (await db.execute(select(col(User.preference)).where(col(User.user_id) == user_id))).first()
    if row is None:
        raise Unauthorized("Account no longer exists")
    preference = row[0] or {}
    await state.redis.set(
        tokens.user_snapshot_key(user_id), json.dumps(preference), ex=USER_SNAPSHOT_TTL_S, nx=True
    )
    return preference


async def current_caller(request: HTTPConnection, auth: AuthDep, state: StateDep) -> Caller:
    """User, session and project in one Redis round trip that also renews the tokens (PostgreSQL only when the
    user's copy is not cached).

    The same checks and errors as UserDep + SessionDep + ProjectDep, for the routes on every keystroke.
    """
    session_token, project_token = session_token_of(request), project_token_of(request)
    if not session_token:
        raise Unauthorized("Missing session token: acquire a session first")
    settings = state.settings
    raw_session, raw_project, raw_user = await tokens.read_renewing(
        state.redis,
        [
            tokens.session_key(session_token),
            tokens.project_key(project_token) if project_token else tokens.project_key("-"),
            tokens.user_snapshot_key(auth.user_id),
        ],
        [settings.session_token_ttl_s, 0, 0],
    )
    cached = json.loads(raw_user) if raw_user is not None else None
    preference = cached if isinstance(cached, dict) else await _user_preference(state, auth.user_id)
    session = _checked_session(tokens.session_from(raw_session), auth)
    if not project_token:
        raise Unauthorized("Missing project token: create or activate a project first")
    project = _checked_project(tokens.project_from(raw_project), session)
    return Caller(auth.user_id, preference, session, project)


CallerDep = Annotated[Caller, Depends(current_caller)]
