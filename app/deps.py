"""FastAPI dependencies: state, database session, and the caller's user, session and project."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from app import tokens
from app.errors import Forbidden, Unauthorized
from app.settings import Settings
from app.state import AppState
from db.tables import User


def get_state(request: HTTPConnection) -> AppState:
    """The ingress state stored on the app at startup."""
    return request.app.state.c4m


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    """The settings of this ingress."""
    return state.settings


def get_redis(state: StateDep) -> Redis:
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


async def current_auth(request: HTTPConnection, redis: RedisDep) -> tokens.AuthInfo:
    """The authenticated caller; 401 when the auth token is missing, unknown or expired."""
    token = auth_token_of(request)
    if not token:
        raise Unauthorized("Missing auth token: authenticate first")
    info = await tokens.resolve_auth(redis, token)
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


async def current_session(request: HTTPConnection, auth: AuthDep, redis: RedisDep) -> tokens.SessionInfo:
    """The caller's session; 401 when missing or expired, 403 when it belongs to another user."""
    token = session_token_of(request)
    if not token:
        raise Unauthorized("Missing session token: acquire a session first")
    info = await tokens.resolve_session(redis, token)
    if info is None:
        raise Unauthorized("Invalid or expired session token: acquire a session again")
    if info.user_id != auth.user_id:
        raise Forbidden("Session token belongs to another user")
    return info


SessionDep = Annotated[tokens.SessionInfo, Depends(current_session)]


async def current_project(
    request: HTTPConnection, session: SessionDep, redis: RedisDep
) -> tokens.ProjectInfo:
    """The caller's active project; 401 when missing or expired, 403 when not the caller's."""
    token = _token(request, "project_token", "x-project-token")
    if not token:
        raise Unauthorized("Missing project token: create or activate a project first")
    info = await tokens.resolve_project(redis, token)
    if info is None:
        raise Unauthorized("Invalid or expired project token: activate the project again")
    if info.user_id != session.user_id:
        raise Forbidden("Project token belongs to another user")
    return info


ProjectDep = Annotated[tokens.ProjectInfo, Depends(current_project)]
