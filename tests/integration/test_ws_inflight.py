"""A flood of operations on one WebSocket: capped in flight, never a 500, and nobody else pays for it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from app.protocol import ChatCall
from tests.utils import payloads as P
from tests.utils.asgi_api import ScriptedGateway, model_id, signed_in
from tests.utils.asgi_websocket import AsgiWebSocket
from tests.utils.replicas import client_for, new_address, replica

BAD_SIGN_UP = {"email": "not-an-email"}  # an auth-class request refused fast (422) before any hashing
FLOOD = 600  # operations sent at once, several times the Redis pool's connections


def cookie_header(client: Any) -> dict[str, str]:
    """The signed-in client's cookies as a header, for a socket opened beside it."""
    return {"cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}


async def finals(ws: AsgiWebSocket, ids: set[str]) -> dict[str, dict[str, Any]]:
    """Read until every request id in `ids` has its last reply (an answer or an error)."""
    done: dict[str, dict[str, Any]] = {}
    while set(done) != ids:
        reply = await ws.receive()
        rid = reply.get("request_id")
        if rid in ids and ("error" in reply or "completion_request_response" in reply):
            done[rid] = reply
    return done


async def test_a_flooded_socket_gets_4xx_and_everyone_else_is_served(services) -> None:
    # Real limits: generous for completions (the flood itself is allowed), tight for the auth class.
    async with replica(
        services, rate_limit_auth=3, rate_limit_completion=100_000, rate_limit_default=100_000
    ) as (app, state):
        flooder, _ = await signed_in(client_for(app, new_address()))
        bystander, _ = await signed_in(client_for(app, new_address()))
        prober = client_for(app, new_address())
        body = P.completion_request([model_id(state, "scripted")])
        ids = {f"f{n}" for n in range(FLOOD)}
        async with AsgiWebSocket(app, "/api/ws/completion", cookie_header(flooder)) as ws:
            for rid in sorted(ids):
                await ws.send({"request_id": rid, "completion_request": body})
            replies = asyncio.create_task(finals(ws, ids))
            await asyncio.sleep(0)  # the socket's reader is dispatching the flood now

            async def timed_list() -> tuple[int, float]:
                began = time.monotonic()
                r = await bystander.get("/api/project/list")
                return r.status_code, time.monotonic() - began

            async def probe() -> list[int]:
                return [
                    (await prober.post("/api/user/create", json=BAD_SIGN_UP)).status_code for _ in range(5)
                ]

            (status, took), statuses = await asyncio.gather(timed_list(), probe())
            got = await asyncio.wait_for(replies, 60)

            # Another user is answered, and promptly; the limiter kept limiting (no request let through).
            assert status == 200 and took < 2.0, (status, took)
            assert statuses == [422, 422, 422, 429, 429], statuses
            # Every operation got a 4xx or an answer, never a 500 or a 503.
            errors = [r for r in got.values() if "error" in r]
            assert all(400 <= r["status"] < 500 for r in errors), {r["status"] for r in errors}
            capped = [r for r in errors if r["status"] == 429]
            assert capped and all("in flight" in r["error"] for r in capped), capped[:3]
            # The socket is still open and works.
            await ws.send({"request_id": "after", "completion_request": body})
            after = (await finals(ws, {"after"}))["after"]
            assert after["completion_request_response"]["data"]["completions"][0]["completion"] == "read()"


class GatedGateway(ScriptedGateway):
    """Chat answers wait until the test opens the gate: operations stay in flight as long as it likes."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def chat(self, model_name: str, call: ChatCall) -> AsyncIterator[str]:
        """The scripted answer, once the gate is open."""
        await self.gate.wait()
        async for piece in super().chat(model_name, call):
            yield piece


async def reply_to(ws: AsgiWebSocket, rid: str) -> dict[str, Any]:
    """The last reply of one operation (its answer or its error)."""
    while True:
        reply = await ws.receive()
        if reply.get("request_id") == rid and ("error" in reply or "chat_request_response" in reply):
            return reply


async def test_operations_in_flight_are_capped_per_socket_and_per_user(services) -> None:
    async with replica(services, ws_max_inflight_per_socket=2, ws_max_inflight_per_user=3) as (app, state):
        gateway = GatedGateway()
        state.gateway = gateway
        c, _ = await signed_in(client_for(app, new_address()))

        def chat(rid: str) -> dict[str, Any]:
            body = {
                "model_ids": [model_id(state, "chatty")],
                "chat_id": str(uuid.uuid4()),
                "messages": [["user", f"question {rid}"]],
            }
            return {"request_id": rid, "chat_request": body}

        async def in_flight(n: int) -> None:
            while sum(state.ws_operations.values()) != n:
                await asyncio.sleep(0.01)

        headers = cookie_header(c)
        async with (
            AsgiWebSocket(app, "/api/ws/chat", headers) as a,
            AsgiWebSocket(app, "/api/ws/chat", headers) as b,
        ):
            await a.send(chat("a1"))
            await a.send(chat("a2"))
            await asyncio.wait_for(in_flight(2), 10)
            await a.send(chat("a3"))  # a third on a socket that allows two
            over_socket = await reply_to(a, "a3")
            assert over_socket["status"] == 429 and over_socket["retry_after"] == 1, over_socket
            assert "in flight on this socket (at most 2)" in over_socket["error"]

            await b.send(chat("b1"))  # the user's third: allowed
            await asyncio.wait_for(in_flight(3), 10)
            await b.send(chat("b2"))  # the user's fourth, on a socket with room: refused
            over_user = await reply_to(b, "b2")
            assert over_user["status"] == 429 and "for this user (at most 3" in over_user["error"], over_user

            gateway.gate.set()
            for ws, rid in ((a, "a1"), (a, "a2"), (b, "b1")):
                answer = await reply_to(ws, rid)
                assert "chat_request_response" in answer, answer
            await asyncio.wait_for(in_flight(0), 10)  # finished operations give their places back
            await b.send(chat("b3"))
            assert "chat_request_response" in await reply_to(b, "b3")
        assert state.ws_operations == {}
