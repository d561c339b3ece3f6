"""Token expiry cascades on real Redis (expiry events) and PostgreSQL, with lifetimes of seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.context.live_state import Owner, read_files
from app.identity import tokens
from app.workers.session_reaper import SessionReaper
from db.tables import Session, User
from serve.embedded import ServiceUrls
from tests.utils.asgi_api import api_settings, running_api, signed_in

CHANGE = {"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": ["SECRET_PLAN = 1"]}


@pytest.fixture
async def reaper(services: ServiceUrls) -> AsyncIterator[SessionReaper]:
    r = SessionReaper(services.redis_url, services.database_url, sweep_interval_s=60)
    task = asyncio.create_task(r.run())
    yield r
    r.stop()
    await task


async def _wait(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "the cascade did not happen"
        await asyncio.sleep(0.1)


async def _session_state(state, email: str):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    async with state.sessionmaker() as db:
        user = (await db.execute(select(User).where(User.email == email))).scalar_one()
        session = (await db.execute(select(Session).where(Session.user_id == user.user_id))).scalar_one()
        return user, session


async def test_expired_session_cascades(services: ServiceUrls, data_dir: Path, reaper: SessionReaper) -> None:
    settings = api_settings(data_dir, session_token_ttl_s=2, project_token_ttl_s=2)
    async with running_api(services.database_url, services.redis_url, settings) as (client, state):
        c, email = await signed_in(client, preference={"store_context": False})
        r = await c.post(
            "/api/completion/multi-file-context/update", json={"context_updates": {"plan.py": [CHANGE]}}
        )
        assert r.status_code == 200, r.text
        user, session = await _session_state(state, email)
        session_token, project_token = c.cookies["session_token"], c.cookies["project_token"]
        project_id = (await tokens.resolve_project(state.redis, project_token)).project_id  # type: ignore[union-attr]
        owner = Owner(project_id, user.user_id)
        assert await read_files(state.redis, owner) == {"plan.py": ["SECRET_PLAN = 1"]}
        assert session.end_time is None

        async def ended() -> bool:
            return (await _session_state(state, email))[1].end_time is not None

        await _wait(ended)
        assert not await state.redis.exists(tokens.session_shadow_key(tokens.digest(session_token)))
        assert await read_files(state.redis, owner) == {}  # no consent: the live files died with the session
        r = await c.post(
            "/api/completion/multi-file-context/update", json={"context_updates": {"plan.py": [CHANGE]}}
        )
        assert r.status_code == 401
        r = await c.get("/api/session/acquire")  # the auth token is still good: a new session starts
        assert r.status_code == 200 and r.json()["session_token"] != session_token


async def test_expired_auth_token_ends_its_sessions(
    services: ServiceUrls, data_dir: Path, reaper: SessionReaper
) -> None:
    settings = api_settings(data_dir, auth_token_ttl_s=2, session_token_ttl_s=600)
    async with running_api(services.database_url, services.redis_url, settings) as (client, state):
        c, email = await signed_in(client)
        session_token = c.cookies["session_token"]

        async def ended() -> bool:
            return (await _session_state(state, email))[1].end_time is not None

        await _wait(ended)
        assert not await state.redis.exists(tokens.session_key(session_token))
        r = await c.get("/api/session/acquire")
        assert r.status_code == 401


async def test_sweep_ends_sessions_whose_events_were_missed(services: ServiceUrls, data_dir: Path) -> None:
    async with running_api(services.database_url, services.redis_url, api_settings(data_dir)) as (
        client,
        state,
    ):
        c, email = await signed_in(client)
        # DEL fires no expiry event: exactly what a reaper that was down would have missed.
        await state.redis.delete(tokens.session_key(c.cookies["session_token"]))
        assert (await _session_state(state, email))[1].end_time is None
        late = SessionReaper(services.redis_url, services.database_url)
        try:
            assert await late.sweep() >= 1
        finally:
            await late.close()
        assert (await _session_state(state, email))[1].end_time is not None
        assert not await state.redis.exists(tokens.project_key(c.cookies["project_token"]))
