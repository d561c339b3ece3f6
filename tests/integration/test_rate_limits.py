"""Rate limits in Redis: global across ingress replicas, keyed by user or trusted client address, 429 + Retry-After."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import WebSocket
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from app.api.ratelimit import enforce
from app.errors import RateLimited
from app.main import create_app
from db.tables import MetaQuery
from tests.utils import payloads as P
from tests.utils.asgi_api import count, model_id, signed_in
from tests.utils.replicas import client_for, new_address, replica

BAD_SIGN_UP = {
    "email": "not-an-email"
}  # an auth-class request that is refused fast (422), before any hashing


def assert_limited(r, route_class: str, limit: int, window_s: int) -> None:  # type: ignore[no-untyped-def]
    """A 429 with a `{"message"}` body and an integer Retry-After within the window."""
    assert r.status_code == 429, r.text
    assert set(r.json()) == {"message"}
    assert (
        f"{route_class} requests" in r.json()["message"]
        and f"{limit} per {window_s} s" in r.json()["message"]
    )
    assert 1 <= int(r.headers["retry-after"]) <= window_s
    assert r.headers["x-ratelimit-limit"] == str(limit)


async def test_limit_is_global_across_two_replicas(services) -> None:
    limits = {"rate_limit_auth": 4, "rate_limit_window_s": 60}
    async with replica(services, **limits) as (app_a, _), replica(services, **limits) as (app_b, _):
        address = new_address()
        a, b = client_for(app_a, address), client_for(app_b, address)
        statuses = [
            (await (a if i % 2 else b).post("/api/user/create", json=BAD_SIGN_UP)).status_code
            for i in range(4)
        ]
        assert statuses == [422] * 4
        assert_limited(await a.post("/api/user/create", json=BAD_SIGN_UP), "auth", 4, 60)
        assert_limited(await b.post("/api/user/authenticate", json=BAD_SIGN_UP), "auth", 4, 60)
        # Another address has its own window.
        other = client_for(app_b, new_address())
        assert (await other.post("/api/user/create", json=BAD_SIGN_UP)).status_code == 422


async def test_concurrent_requests_never_exceed_the_limit(services) -> None:
    async with (
        replica(services, rate_limit_auth=5) as (app_a, _),
        replica(services, rate_limit_auth=5) as (app_b, _),
    ):
        address = new_address()
        clients = [client_for(app_a, address), client_for(app_b, address)]
        results = await asyncio.gather(
            *(clients[i % 2].post("/api/user/create", json=BAD_SIGN_UP) for i in range(20))
        )
        assert sorted(r.status_code for r in results) == [422] * 5 + [429] * 15


async def test_signed_in_users_are_limited_per_user_not_per_address(services) -> None:
    # Sign-up/in (auth class) is generous here; acquire and project create are 2 default-class requests.
    async with replica(services, rate_limit_auth=100, rate_limit_default=4) as (app, _):
        address = new_address()
        alice, _ = await signed_in(client_for(app, address))
        bob, _ = await signed_in(client_for(app, address))
        for _ in range(2):
            assert (await alice.get("/api/session/acquire")).status_code == 200
        assert_limited(await alice.get("/api/session/acquire"), "default", 4, 60)
        # Same address, other user: own window. Anonymous callers from the address: the address's window.
        assert (await bob.get("/api/session/acquire")).status_code == 200
        anonymous = client_for(app, address)
        assert (await anonymous.get("/api/session/acquire")).status_code == 401
        # A made-up token is not a user: it counts against the address, so rotating tokens gains nothing.
        anonymous.cookies.set("auth_token", "made-up")
        assert (await anonymous.get("/api/session/acquire")).status_code == 401


async def test_completion_class_has_its_own_limit_and_refuses_before_storing(services) -> None:
    async with replica(services, rate_limit_auth=100, rate_limit_completion=2) as (app, state):
        c, _ = await signed_in(client_for(app, new_address()))
        body = P.completion_request([model_id(state, "scripted")])
        for _ in range(2):
            assert (await c.post("/api/completion/request", json=body)).status_code == 200
        before = await count(state, MetaQuery)
        assert_limited(await c.post("/api/completion/request", json=body), "completion", 2, 60)
        assert await count(state, MetaQuery) == before
        # Other classes are unaffected.
        assert (await c.get("/api/session/acquire")).status_code == 200


async def test_window_slides(services) -> None:
    async with replica(services, rate_limit_auth=2, rate_limit_window_s=1) as (app, _):
        c = client_for(app, new_address())
        assert [(await c.post("/api/user/create", json=BAD_SIGN_UP)).status_code for _ in range(2)] == [
            422,
            422,
        ]
        r = await c.post("/api/user/create", json=BAD_SIGN_UP)
        assert_limited(r, "auth", 2, 1)
        await asyncio.sleep(1.1)
        assert (await c.post("/api/user/create", json=BAD_SIGN_UP)).status_code == 422


async def test_forwarded_for_is_believed_only_from_trusted_proxies(services) -> None:
    async with replica(services, rate_limit_auth=2, trusted_proxies=["10.0.0.0/8"]) as (app, _):
        proxy = client_for(app, new_address())  # a 10.x peer: trusted
        first, second = "198.51.100.10", "198.51.100.11"
        for _ in range(2):
            r = await proxy.post(
                "/api/user/create", json=BAD_SIGN_UP, headers={"x-forwarded-for": f"6.6.6.6, {first}"}
            )
            assert r.status_code == 422
        r = await proxy.post(
            "/api/user/create", json=BAD_SIGN_UP, headers={"x-forwarded-for": f"7.7.7.7, {first}"}
        )
        assert r.status_code == 429  # the spoofed left entry changed, the proxy-appended client did not
        r = await proxy.post("/api/user/create", json=BAD_SIGN_UP, headers={"x-forwarded-for": second})
        assert r.status_code == 422

        direct = client_for(app, "203.0.113.77")  # untrusted peer: its X-Forwarded-For is ignored
        statuses = [
            (
                await direct.post(
                    "/api/user/create", json=BAD_SIGN_UP, headers={"x-forwarded-for": f"198.51.100.{i}"}
                )
            ).status_code
            for i in range(20, 23)
        ]
        assert statuses == [422, 422, 429]


async def test_disabled_limits_let_everything_through(services) -> None:
    async with replica(services, rate_limit_auth=1, rate_limit_enabled=False) as (app, _):
        c = client_for(app, new_address())
        assert {(await c.post("/api/user/create", json=BAD_SIGN_UP)).status_code for _ in range(3)} == {422}


async def test_ping_and_docs_are_never_limited(services) -> None:
    async with replica(services, rate_limit_default=1) as (app, _):
        c = client_for(app, new_address())
        assert {(await c.head("/api/ping")).status_code for _ in range(3)} == {200}
        assert {(await c.get("/openapi.json")).status_code for _ in range(3)} == {200}
        assert (await c.get("/api/nowhere")).status_code == 404
        assert (await c.get("/api/nowhere")).status_code == 429  # unknown /api paths count too (scanners)


def assert_outage(r) -> None:  # type: ignore[no-untyped-def]
    """The error map's outage answer: 503, `Retry-After`, a `{"message"}` naming what is unavailable."""
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5" and "Redis is unavailable" in r.json()["message"]


async def test_redis_outage_fails_closed_with_503(services) -> None:
    # Nothing is let through uncounted, not even a request that would not need Redis itself.
    async with replica(services, redis_url="redis://127.0.0.1:9/0", rate_limit_auth=1) as (app, _):
        c = client_for(app, new_address())
        for _ in range(2):
            assert_outage(await c.post("/api/user/create", json=BAD_SIGN_UP))
        c.cookies.set("auth_token", "x")
        assert_outage(await c.get("/api/session/acquire"))
        assert (await c.head("/api/ping")).status_code == 200  # liveness is never limited


async def test_a_websocket_handshake_is_refused_while_redis_is_down(services) -> None:
    async with replica(services, redis_url="redis://127.0.0.1:9/0") as (app, _):
        scope = {
            "type": "websocket",
            "path": "/api/ws/completion",
            "raw_path": b"/api/ws/completion",
            "query_string": b"",
            "headers": [(b"host", b"test")],
            "client": (new_address(), 40000),
            "server": ("test", 80),
            "subprotocols": [],
            "asgi": {"version": "3.0"},
        }
        to_app: asyncio.Queue = asyncio.Queue()
        from_app: asyncio.Queue = asyncio.Queue()
        await to_app.put({"type": "websocket.connect"})
        await asyncio.wait_for(app(scope, to_app.get, from_app.put), 10)
        answer = await from_app.get()
        # Not accepted uncounted: closed with "try again later" (a server with the denial extension gets the 503).
        assert answer["type"] == "websocket.close" and answer["code"] == 1013, answer
        assert "unavailable" in answer["reason"]


async def test_an_exhausted_redis_pool_fails_closed_after_a_short_wait(services) -> None:
    tight_pool = {"redis_pool_size": 3, "redis_pool_timeout_s": 0.3}
    async with replica(services, rate_limit_auth=3, **tight_pool) as (app, state):
        c = client_for(app, new_address())
        pool = state.redis.connection_pool
        # Every connection of the pool busy: the replica's supersede listener holds one, these the other two.
        held = [await pool.get_connection() for _ in range(2)]
        try:
            began = asyncio.get_running_loop().time()
            assert_outage(await c.post("/api/user/create", json=BAD_SIGN_UP))  # not let through uncounted
            assert 0.3 <= asyncio.get_running_loop().time() - began < 2.0  # it waited for a connection first
            # A burst waits for the connection that comes free instead of failing.
            late = asyncio.create_task(c.post("/api/user/create", json=BAD_SIGN_UP))
            await asyncio.sleep(0.1)
            await pool.release(held.pop())
            assert (await late).status_code == 422
        finally:
            for connection in held:
                await pool.release(connection)
        statuses = [(await c.post("/api/user/create", json=BAD_SIGN_UP)).status_code for _ in range(3)]
        assert statuses == [422, 422, 429]  # the limit is intact: 3 counted requests


def test_websocket_connects_and_messages_are_limited(services) -> None:
    """The middleware counts handshakes; handlers call `enforce` per message (TestClient: its own event loop)."""
    from app.bootstrap import build_state
    from app.infra.settings import Settings
    from tests.utils.asgi_api import ENTRIES, ScriptedGateway, cards_of

    settings = Settings(environment="test", rate_limit_completion=3)

    def make_state():  # type: ignore[no-untyped-def]
        return build_state(
            settings, services.database_url, services.redis_url, ScriptedGateway(), cards_of(ENTRIES)
        )

    app = create_app(make_state)

    @app.websocket("/api/ws/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                try:
                    await enforce(websocket)
                except RateLimited as exc:
                    await websocket.send_json({"error": exc.message})
                    continue
                await websocket.send_json({"echo": text})
        except WebSocketDisconnect:
            pass

    with TestClient(app, client=(new_address(), 40000)) as tc:
        with tc.websocket_connect("/api/ws/echo") as ws:  # connect: 1 of 3
            ws.send_text("a")  # 2 of 3
            assert ws.receive_json() == {"echo": "a"}
            ws.send_text("b")  # 3 of 3
            assert ws.receive_json() == {"echo": "b"}
            ws.send_text("c")  # over: an error on the open socket, which stays open
            assert "Too many completion requests" in ws.receive_json()["error"]
        # The next handshake is refused with HTTP 429 (the denial-response extension).
        with pytest.raises(WebSocketDenialResponse) as refused, tc.websocket_connect("/api/ws/echo"):
            pass
        assert refused.value.status_code == 429 and int(refused.value.headers["retry-after"]) >= 1
        assert "Too many completion requests" in refused.value.json()["message"]
