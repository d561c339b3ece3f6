"""Live context bounded per user across projects, and a full Redis answering 503 (real PostgreSQL and Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from redis.asyncio import Redis

from app.context.live_state import Owner, read_files, usage_key
from app.identity import tokens
from app.infra.state import AppState
from tests.utils import payloads as P
from tests.utils.asgi_api import model_id, signed_in
from tests.utils.asgi_websocket import AsgiWebSocket
from tests.utils.replicas import client_for, new_address, replica

URL = "/api/completion/multi-file-context/update"
QUOTA = 30_000
LINE = "x = 1  # " + "y" * 90  # 100 characters


def insert(lines: list[str], at: int = 0) -> dict[str, Any]:
    return {"change_type": "insert", "start_line": at, "end_line": at, "new_lines": lines}


def remove(start: int, end: int) -> dict[str, Any]:
    return {"change_type": "remove", "start_line": start, "end_line": end, "new_lines": []}


async def owner_of(c: httpx.AsyncClient, state: AppState) -> Owner:
    info = await tokens.resolve_project(state.redis, c.cookies["project_token"])
    assert info is not None
    return Owner(info.project_id, info.user_id)


async def new_project(c: httpx.AsyncClient, name: str) -> None:
    """Create a project and make it the client's active one (its project cookie)."""
    r = await c.post("/api/project/create", json={"project_name": name})
    assert r.status_code == 201, r.text


async def test_live_context_is_bounded_per_user_across_projects(services) -> None:
    limits = {"rate_limit_enabled": False, "context_user_quota_bytes": QUOTA, "max_context_chars": 50_000}
    async with replica(services, **limits) as (app, state):
        c, _ = await signed_in(client_for(app, new_address()))
        first = await owner_of(c, state)
        big = [LINE] * 180  # ~18 KB: well within a project's limits, more than half the user's quota
        r = await c.post(URL, json={"context_updates": {"a.py": [insert(big)]}})
        assert r.status_code == 200, r.text

        # A second project: its own file limits would allow this, the user's quota does not.
        await new_project(c, "second")
        second = await owner_of(c, state)
        r = await c.post(URL, json={"context_updates": {"small.py": [insert([LINE])], "b.py": [insert(big)]}})
        assert r.status_code == 413 and "quota" in r.json()["message"], r.text
        assert await read_files(state.redis, second) == {}  # nothing of the refused update was stored
        # What fits is stored; a third project is counted with the others too.
        r = await c.post(URL, json={"context_updates": {"b.py": [insert(big[:60])]}})
        assert r.status_code == 200, r.text
        await new_project(c, "third")
        r = await c.post(URL, json={"context_updates": {"c.py": [insert(big[:60])]}})
        assert r.status_code == 413, r.text

        # Shrinking is always allowed; the freed bytes can be used elsewhere.
        c.cookies.delete("project_token")
        r = await c.put("/api/project/activate", json={"project_id": str(first.project_id)})
        assert r.status_code == 200, r.text
        r = await c.post(URL, json={"context_updates": {"a.py": [remove(0, 120)]}})
        assert r.status_code == 200 and len(r.json()["data"]["a.py"]) == 60, r.text
        c.cookies.delete("project_token")
        r = await c.put("/api/project/activate", json={"project_id": str(second.project_id)})
        assert r.status_code == 200, r.text
        r = await c.post(URL, json={"context_updates": {"b.py": [insert(big[:100], at=60)]}})
        assert r.status_code == 200, r.text

        # Another user has a quota of their own.
        other, _ = await signed_in(client_for(app, new_address()))
        r = await other.post(URL, json={"context_updates": {"a.py": [insert(big)]}})
        assert r.status_code == 200, r.text

        # A project's state that is gone (expired, dropped) counts nothing any more.
        await state.redis.delete(f"c4m:ctx:{second.project_id}:{second.user_id}")
        r = await c.post(URL, json={"context_updates": {"b2.py": [insert(big[:100])]}})
        assert r.status_code == 200, r.text
        counted = await state.redis.hgetall(usage_key(first.user_id))
        assert set(counted) == {str(first.project_id).encode(), str(second.project_id).encode()}
        assert sum(int(v) for v in counted.values()) <= QUOTA
        # Another project's state gone: its bytes are free again, and its entry is pruned.
        await state.redis.delete(f"c4m:ctx:{first.project_id}:{first.user_id}")
        r = await c.post(URL, json={"context_updates": {"b3.py": [insert(big)]}})
        assert r.status_code == 200, r.text
        assert set(await state.redis.hgetall(usage_key(first.user_id))) == {str(second.project_id).encode()}


@asynccontextmanager
async def full(redis: Redis) -> AsyncIterator[None]:
    """Redis at its memory limit (noeviction): every write that needs memory is refused meanwhile."""
    before = (await redis.config_get("maxmemory"))["maxmemory"]
    assert (await redis.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"
    await redis.config_set("maxmemory", 1)
    try:
        yield
    finally:
        await redis.config_set("maxmemory", before)


def assert_outage(r: httpx.Response) -> None:
    assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
    assert "Redis is unavailable" in r.json()["message"]


async def test_a_full_redis_is_503_not_500(services) -> None:
    async with replica(services, rate_limit_enabled=False) as (app, state):
        c, _ = await signed_in(client_for(app, new_address()))
        owner = await owner_of(c, state)
        cookie = {"cookie": "; ".join(f"{k}={v}" for k, v in c.cookies.items())}
        update = {"context_updates": {"a.py": [insert([LINE])]}}
        completion = P.completion_request([model_id(state, "scripted")])
        async with full(state.redis):
            assert_outage(await c.post(URL, json=update))
            assert_outage(await c.post("/api/completion/request", json=completion))
            assert_outage(await c.get("/api/session/acquire"))
            async with AsgiWebSocket(app, "/api/ws/completion/multi-file-context", cookie) as ws:
                await ws.send({"request_id": "m", "multi_file_context_update": update})
                reply = await ws.receive()
                assert reply["status"] == 503 and reply["retry_after"] == 5, reply
            # Reading still works.
            assert (await c.get("/api/project/list")).status_code == 200
        assert await read_files(state.redis, owner) == {}
        r = await c.post(URL, json=update)
        assert r.status_code == 200, r.text


async def test_the_limiter_keeps_limiting_when_redis_is_full(services) -> None:
    async with replica(services, rate_limit_auth=2) as (app, state):
        c = client_for(app, new_address())
        async with full(state.redis):
            statuses = [
                (await c.post("/api/user/create", json={"email": "not-an-email"})).status_code
                for _ in range(3)
            ]
        assert statuses == [
            422,
            422,
            429,
        ]  # counted, and refused past the limit: never let through, never a 500
