"""Per-user API tokens on real PostgreSQL and Redis: shown once, stored hashed, listed, revoked, refused."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from sqlalchemy import select, text

from app.identity import api_tokens
from db.tables import ApiToken
from tests.utils.api_tokens import bearer, user_with_token
from tests.utils.asgi_api import fresh_client, signed_in
from tests.utils.replicas import client_for, new_address, replica


async def test_a_token_is_shown_once_stored_hashed_and_authenticates_v1(api) -> None:
    client, state = api
    c, token, created = await user_with_token(client)
    assert token.startswith("c4m_") and api_tokens.looks_like_api_token(token)
    assert set(created) == {"token_id", "name", "created_at", "last_used_at", "expires_at", "token"}
    assert created["name"] == "laptop" and created["expires_at"] is None and created["last_used_at"] is None

    anonymous = fresh_client(client)
    r = await anonymous.get("/v1/health", headers=bearer(token))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "scripted" and r.json()["device"] == "cpu"

    async with state.sessionmaker() as db:
        row = await db.get(ApiToken, uuid.UUID(created["token_id"]))
        assert row is not None
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in str(row.model_dump())
        assert row.last_used_at is not None  # the lookup touched it
    # Redis keeps a copy under the keyed digest of the hash: never the value, nor the hash PostgreSQL holds.
    assert await state.redis.get(api_tokens.cache_key(row.token_hash)) is not None
    assert not [k async for k in state.redis.scan_iter(match=f"*{token[4:]}*")]
    assert not [k async for k in state.redis.scan_iter(match=f"*{row.token_hash}*")]

    listed = await c.get("/api/user/tokens")
    assert listed.status_code == 200, listed.text
    assert token not in listed.text
    (item,) = listed.json()["data"]
    assert set(item) == {"token_id", "name", "created_at", "last_used_at", "expires_at"}
    assert item["token_id"] == created["token_id"] and item["last_used_at"] is not None


async def test_missing_unknown_and_plugin_tokens_are_refused(api) -> None:
    client, _ = api
    c, token, _ = await user_with_token(client)
    anonymous = fresh_client(client)
    assert (await anonymous.get("/v1/health")).status_code == 401
    assert "Missing API token" in (await anonymous.get("/v1/health")).json()["message"]
    for bad in ("c4m_" + "x" * 43, "c4m_short", token + "x", token.upper()):
        r = await anonymous.get("/v1/health", headers=bearer(bad))
        assert r.status_code == 401 and r.json() == {"message": "Invalid, revoked or expired API token"}
    # The plugin's auth token (what the cookie holds) is not an API token.
    r = await anonymous.get("/v1/health", headers=bearer(c.cookies["auth_token"]))
    assert r.status_code == 401
    # And an API token signs nobody in to the plugin's routes.
    assert (await anonymous.get("/api/user/get", headers=bearer(token))).status_code == 401


async def test_revoked_tokens_are_refused_and_only_the_owner_may_revoke(api) -> None:
    client, _ = api
    alice, token, created = await user_with_token(client)
    bob, bob_token, bob_created = await user_with_token(client)
    anonymous = fresh_client(client)
    assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 200  # cached now

    # Another user's token and an unknown one look alike: 404.
    assert (await bob.delete(f"/api/user/tokens/{created['token_id']}")).status_code == 404
    assert (await bob.delete(f"/api/user/tokens/{uuid.uuid4()}")).status_code == 404
    assert (await anonymous.delete(f"/api/user/tokens/{created['token_id']}")).status_code == 401
    assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 200

    r = await alice.delete(f"/api/user/tokens/{created['token_id']}")
    assert r.status_code == 200, r.text
    assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 401
    assert (await alice.get("/api/user/tokens")).json()["data"] == []
    assert (await alice.delete(f"/api/user/tokens/{created['token_id']}")).status_code == 404
    assert (await anonymous.get("/v1/health", headers=bearer(bob_token))).status_code == 200
    assert bob_created["token_id"] != created["token_id"]


async def test_a_lookup_in_flight_during_a_revoke_cannot_bring_the_token_back(api) -> None:
    client, state = api
    _, token, _ = await user_with_token(client)
    hashed = api_tokens.token_hash(token)
    # The revoke's mark is set (and the copy dropped) while the row is still readable, as when a lookup read
    # the row just before the revoke's DELETE committed: the lookup must not keep a copy.
    await api_tokens.forget(state.redis, hashed, state.settings.api_token_cache_s)
    assert await api_tokens.resolve(state.redis, state.sessionmaker, token, 60) is None
    assert await state.redis.get(api_tokens.cache_key(hashed)) is None


async def test_expired_tokens_are_refused(api) -> None:
    client, state = api
    _, token, created = await user_with_token(client, expires_in_days=1)
    assert created["expires_at"] is not None
    anonymous = fresh_client(client)
    assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 200
    async with state.sessionmaker() as db, db.begin():
        await db.execute(
            text("UPDATE api_token SET expires_at = now() - interval '1 second' WHERE token_id = :id"),
            {"id": uuid.UUID(created["token_id"])},
        )
    await state.redis.delete(api_tokens.cache_key(api_tokens.token_hash(token)))  # the copy's time is up
    assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 401
    # A copy never outlives the expiry it was made with.
    _, soon, _ = await user_with_token(client, expires_in_days=1)
    await api_tokens.resolve(state.redis, state.sessionmaker, soon, 10**9)
    assert 0 < await state.redis.ttl(api_tokens.cache_key(api_tokens.token_hash(soon))) <= 24 * 3600


async def test_bad_token_requests_are_4xx(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    for body in ({}, {"name": ""}, {"name": "x" * 101}, {"name": "a", "expires_in_days": 0}, {"name": 1}):
        assert (await c.post("/api/user/tokens", json=body)).status_code == 422, body
    assert (await c.delete("/api/user/tokens/not-a-uuid")).status_code == 422
    limit = state.settings.max_api_tokens_per_user
    for _ in range(limit):
        assert (await c.post("/api/user/tokens", json={"name": "n"})).status_code == 201
    r = await c.post("/api/user/tokens", json={"name": "one too many"})
    assert r.status_code == 409 and str(limit) in r.json()["message"]


async def test_account_deletion_removes_the_tokens(api) -> None:
    client, state = api
    c, token, created = await user_with_token(client)
    anonymous = fresh_client(client)
    assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 200
    assert (await c.delete("/api/user/delete")).status_code == 200
    assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 401
    async with state.sessionmaker() as db:
        rows = (
            await db.execute(select(ApiToken).where(ApiToken.token_id == uuid.UUID(created["token_id"])))
        ).all()  # type: ignore[arg-type]
    assert rows == []
    # No copy of the row is left (the refused call above left the invalid mark, which names nobody).
    assert await state.redis.get(api_tokens.cache_key(api_tokens.token_hash(token))) == api_tokens.INVALID


async def test_v1_calls_are_rate_limited_per_user_like_the_plugins(services) -> None:
    async with replica(services, rate_limit_default=1000, rate_limit_auth=1000, rate_limit_completion=3) as (
        app,
        _,
    ):
        address = new_address()
        c, token, _ = await user_with_token(client_for(app, address))
        r = await c.post("/api/user/tokens", json={"name": "second"})
        second = r.json()["data"]["token"]
        body = {"type": "view", "completion_id": f"cmpl-{uuid.uuid4()}", "choice_index": 0}
        anonymous = client_for(app, address)
        statuses = [
            (await anonymous.post("/v1/events", json=body, headers=bearer(t))).status_code
            for t in (token, second, token)
        ]
        assert statuses == [404, 404, 404]
        # A second token of the same user shares the user's window.
        r = await anonymous.post("/v1/events", json=body, headers=bearer(second))
        assert r.status_code == 429 and "completion requests" in r.json()["message"]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # Another user from the same address has a window of its own.
        _, other, _ = await user_with_token(client_for(app, address))
        assert (await anonymous.post("/v1/events", json=body, headers=bearer(other))).status_code == 404


async def test_the_export_lists_the_tokens_without_hash_or_value(api) -> None:
    client, _ = api
    c, token, created = await user_with_token(client)
    r = await c.get("/api/user/export")
    assert r.status_code == 200, r.text
    (exported,) = r.json()["api_tokens"]
    assert exported["token_id"] == created["token_id"] and exported["name"] == "laptop"
    assert "token_hash" not in exported
    assert token not in r.text and api_tokens.token_hash(token) not in r.text


async def test_an_invalid_token_is_refused_from_redis_for_a_few_seconds(services) -> None:
    async with replica(services, api_token_invalid_cache_s=1) as (app, state):
        address = new_address()
        _, token, created = await user_with_token(client_for(app, address))
        anonymous = client_for(app, address)
        hashed = api_tokens.token_hash(token)

        async def set_hash(value: str) -> None:
            async with state.sessionmaker() as db, db.begin():
                await db.execute(
                    text("UPDATE api_token SET token_hash = :h WHERE token_id = :id"),
                    {"h": value, "id": uuid.UUID(created["token_id"])},
                )

        await set_hash("0" * 64)  # PostgreSQL does not know the token now
        assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 401
        # Known again in PostgreSQL, still refused: the retries are answered from Redis, not PostgreSQL.
        await set_hash(hashed)
        for _ in range(3):
            assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 401
        assert await state.redis.get(api_tokens.cache_key(hashed)) == b"invalid"
        assert 0 < await state.redis.pttl(api_tokens.cache_key(hashed)) <= 1000
        await asyncio.sleep(1.1)  # API_TOKEN_INVALID_CACHE_S later PostgreSQL is asked again
        assert (await anonymous.get("/v1/health", headers=bearer(token))).status_code == 200
