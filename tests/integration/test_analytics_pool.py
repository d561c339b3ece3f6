"""The analytics pool: its own connections, so analytics queries can never starve the request path."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from app.api.deps import AnalyticsDb, DbDep
from app.errors import install_error_handlers
from app.infra.state import AppState


def pool_app(state: AppState) -> FastAPI:
    """A test app with one route per pool, on the module's state (no such routes ship)."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.c4m = state

    @app.get("/analytics-backend")
    async def analytics(db: AnalyticsDb) -> dict[str, int]:
        pid = (await db.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        return {"pid": int(pid)}

    @app.get("/request-backend")
    async def request_path(db: DbDep) -> dict[str, int]:
        pid = (await db.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        return {"pid": int(pid)}

    return app


async def test_analytics_sessions_use_their_own_pool(api) -> None:
    _client, state = api
    assert state.analytics_engine is not state.engine
    assert state.analytics_engine.pool.size() == state.settings.analytics_pool_size  # type: ignore[attr-defined]
    app = pool_app(state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        r = await c.get("/analytics-backend")
        assert r.status_code == 200, r.text
        assert (await c.get("/request-backend")).status_code == 200


async def test_a_busy_analytics_pool_leaves_the_request_path_its_connections(api) -> None:
    _client, state = api
    # Every analytics connection held by a long query (no overflow on that pool) ...
    held = [await state.analytics_engine.connect() for _ in range(state.settings.analytics_pool_size)]
    try:
        app = pool_app(state)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            # ... the request path still gets a connection at once,
            r = await asyncio.wait_for(c.get("/request-backend"), timeout=5)
            assert r.status_code == 200, r.text
            # while another analytics request waits for one of the held connections.
            waiting = asyncio.create_task(c.get("/analytics-backend"))
            await asyncio.sleep(1.0)
            assert not waiting.done()
            await held.pop().close()
            r = await asyncio.wait_for(waiting, timeout=10)
            assert r.status_code == 200, r.text
    finally:
        for conn in held:
            await conn.close()
