"""FastAPI dependency aliases: the ingress state, a database session, and the caller through app/api/auth.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from app.api import auth
from app.identity import tokens
from app.infra.client_address import client_address_of, parse_networks
from app.infra.state import AppState
from db.tables import User


# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool,
# a thread hop per request (and per dependency) on the completion path.
async def get_state(request: HTTPConnection) -> AppState:
    """The ingress state stored on the app at startup."""
    return request.app.state.c4m


StateDep = Annotated[AppState, Depends(get_state)]


async def get_redis(state: StateDep) -> Redis:
    """The shared Redis client."""
    return state.redis


async def get_db(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One database session per request (transactions are opened by the services)."""
    async with state.sessionmaker() as session:
        yield session


async def get_analytics_db(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A database session from the analytics pool (its own connections; long queries stay off the request path's)."""
    async with state.analytics_sessionmaker() as session:
        yield session


async def get_client_address(request: HTTPConnection, state: StateDep) -> str:
    """The request's client address behind the trusted proxies (app/infra/client_address.py), for audit records."""
    return client_address_of(request, parse_networks(state.settings.trusted_proxies))


ClientAddress = Annotated[str, Depends(get_client_address)]
RedisDep = Annotated[Redis, Depends(get_redis)]
DbDep = Annotated[AsyncSession, Depends(get_db)]
AnalyticsDb = Annotated[AsyncSession, Depends(get_analytics_db)]


async def get_credentials(request: HTTPConnection) -> auth.Credentials:
    """The request's auth, session and project tokens."""
    return auth.credentials_of(request)


CredentialsDep = Annotated[auth.Credentials, Depends(get_credentials)]


async def get_auth(creds: CredentialsDep, state: StateDep) -> tokens.AuthInfo:
    """The authenticated caller (auth.authenticate)."""
    return await auth.authenticate(creds, state)


AuthDep = Annotated[tokens.AuthInfo, Depends(get_auth)]


async def get_current_user(info: AuthDep, db: DbDep) -> User:
    """The caller's user row (auth.account)."""
    return await auth.account(info, db)


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser) -> User:
    """The caller's user row when an administrator (auth.admin)."""
    return auth.admin(user)


AdminUser = Annotated[User, Depends(get_admin_user)]


async def get_plugin_session(creds: CredentialsDep, info: AuthDep, state: StateDep) -> tokens.SessionInfo:
    """The caller's plugin session (auth.plugin_session)."""
    return await auth.plugin_session(creds, info, state)


PluginSession = Annotated[tokens.SessionInfo, Depends(get_plugin_session)]


async def get_project(creds: CredentialsDep, session: PluginSession, state: StateDep) -> tokens.ProjectInfo:
    """The caller's active project (auth.active_project)."""
    return await auth.active_project(creds, session, state)


ProjectDep = Annotated[tokens.ProjectInfo, Depends(get_project)]


async def get_caller(creds: CredentialsDep, state: StateDep) -> auth.CallerInfo:
    """User, session and project in one Redis round trip, for the completion path (auth.completion_caller)."""
    return await auth.completion_caller(creds, state)


Caller = Annotated[auth.CallerInfo, Depends(get_caller)]


async def get_api_caller(request: HTTPConnection, state: StateDep) -> auth.ApiCaller:
    """The user of the request's API token, for the /v1 routes (auth.api_caller)."""
    return await auth.api_caller(request, state)


ApiCaller = Annotated[auth.ApiCaller, Depends(get_api_caller)]
