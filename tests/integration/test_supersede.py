"""Superseding across ingress replicas: a newer request of a session cancels the older one wherever it runs."""

from __future__ import annotations

import asyncio
import uuid

from app.services import supersede
from app.services.pipeline import _InFlight
from tests.utils import payloads as P
from tests.utils.asgi_api import model_id
from tests.utils.replicas import client_for, replica


async def sign_in(client) -> None:  # type: ignore[no-untyped-def]
    email = P.new_email()
    assert (await client.post("/api/user/create", json=P.user_create(email))).status_code == 201
    assert (await client.post("/api/user/authenticate", json=P.authenticate(email))).status_code == 200
    assert (await client.get("/api/session/acquire")).status_code == 200
    assert (await client.post("/api/project/create", json={"project_name": "p"})).status_code == 201


async def test_a_newer_request_on_another_replica_cancels_the_older_one(services) -> None:
    async with (
        replica(services, rate_limit_enabled=False) as (app_a, state_a),
        replica(services, rate_limit_enabled=False) as (app_b, state_b),
    ):
        a = client_for(app_a)
        await sign_in(a)
        b = client_for(app_b)
        b.cookies = a.cookies  # the same plugin (one session), its requests spread over two replicas
        slow = P.completion_request([model_id(state_a, "slow")], prefix="x = ")
        fast = P.completion_request([model_id(state_b, "scripted")], prefix="x = 1")
        older = asyncio.create_task(a.post("/api/completion/request", json=slow))
        for _ in range(100):  # until replica A has the call in flight
            if state_a.inflight:
                break
            await asyncio.sleep(0.02)
        assert state_a.inflight, "replica A never started the slow call"
        began = asyncio.get_running_loop().time()
        newer = await b.post("/api/completion/request", json=fast)
        assert newer.status_code == 200, newer.text
        first = await older
        # Cancelled on replica A long before the slow model's 4 s, with the superseded answer.
        assert first.status_code == 409, first.text
        assert asyncio.get_running_loop().time() - began < 2.0
        assert "Superseded" in first.json()["message"]
        assert not state_a.inflight and not state_b.inflight


async def test_requests_of_other_sessions_are_left_alone(services) -> None:
    async with (
        replica(services, rate_limit_enabled=False) as (app_a, state_a),
        replica(services, rate_limit_enabled=False) as (app_b, state_b),
    ):
        a, b = client_for(app_a), client_for(app_b)
        await sign_in(a)
        await sign_in(b)  # another user, another session
        slow = P.completion_request([model_id(state_a, "slow")], prefix="x = ")
        older = asyncio.create_task(a.post("/api/completion/request", json=slow))
        await asyncio.sleep(0.3)
        r = await b.post(
            "/api/completion/request", json=P.completion_request([model_id(state_b, "scripted")])
        )
        assert r.status_code == 200, r.text
        assert (await older).status_code == 200  # the other user's request did not cancel it


async def test_a_late_announcement_of_an_older_request_cancels_nothing() -> None:
    session = uuid.uuid4()
    loop = asyncio.get_running_loop()
    newer = _InFlight(loop.create_future(), seq=7)
    inflight = {session: newer}
    assert not supersede.cancel_older(inflight, session, 6)  # request 6's message arrives after 7 started
    assert not supersede.cancel_older(inflight, session, 7)  # its own announcement
    assert not supersede.cancel_older(inflight, uuid.uuid4(), 99)  # another session
    assert not newer.calls.cancelled()
    assert supersede.cancel_older(inflight, session, 8)
    assert newer.calls.cancelled() and newer.superseded


def test_channel_messages_are_parsed_strictly() -> None:
    session = uuid.uuid4()
    assert supersede.parse(f"{session} 3".encode()) == (session, 3)
    assert supersede.parse(b"nonsense") is None
    assert supersede.parse(f"{session} three") is None
    assert supersede.parse(b"a b c") is None
