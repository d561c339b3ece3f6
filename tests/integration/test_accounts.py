"""Accounts on real PostgreSQL and Redis: get, update, verification and password reset by mail (local outbox)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from passlib.hash import argon2
from sqlalchemy import select

from app.identity import email_tokens, tokens
from app.infra.state import AppState
from db.tables import AuditEvent, Session, User
from serve.embedded import ServiceUrls
from tests.utils import payloads as P
from tests.utils.asgi_api import api_settings, count, fresh_client, running_api
from tests.utils.outbox import body, link_token, mails_to

PUBLIC_URL = "https://code4me.test"


@pytest.fixture(scope="module")
def accounts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's data directory."""
    return tmp_path_factory.mktemp("accounts-data")


@pytest.fixture(scope="module")
def outbox(accounts_dir: Path) -> Path:
    """Where this module's app writes its mails."""
    return api_settings(accounts_dir).outbox_dir


@pytest.fixture(scope="module")
async def accounts_api(
    services: ServiceUrls, accounts_dir: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The app with mail going to this module's outbox and links pointing at PUBLIC_URL."""
    settings = api_settings(accounts_dir, public_url=PUBLIC_URL)
    async with running_api(services.database_url, services.redis_url, settings) as (client, state):
        yield client, state


async def account(client: httpx.AsyncClient, **create: object) -> tuple[httpx.AsyncClient, str]:
    """A fresh client signed in (auth cookie only) to a new password account."""
    c = fresh_client(client)
    email = P.new_email()
    r = await c.post("/api/user/create", json={**P.user_create(email), **create})
    assert r.status_code == 201, r.text
    r = await c.post("/api/user/authenticate", json=P.authenticate(email))
    assert r.status_code == 200, r.text
    return c, email


async def user_row(state: AppState, email: str) -> User:
    """The user with this email (case-insensitive), read fresh."""
    async with state.sessionmaker() as db:
        return (await db.execute(select(User).where(User.email.ilike(email)))).scalar_one()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- get


async def test_get_returns_the_public_user_and_config_never_the_hash(accounts_api) -> None:
    client, _ = accounts_api
    c, email = await account(client)
    r = await c.get("/api/user/get")
    assert r.status_code == 200, r.text
    data = r.json()
    user = data["user"]
    assert {
        "user_id",
        "email",
        "name",
        "joined_at",
        "verified",
        "config_id",
        "preference",
        "is_admin",
    } <= set(user)
    assert user["email"] == email and user["verified"] is False and user["is_admin"] is False
    assert "password_hash" not in r.text and "$argon2" not in r.text
    assert user["preference"]["data_retention_days"] == 365
    assert '"models"' in data["config"]
    assert (await fresh_client(client).get("/api/user/get")).status_code == 401


async def test_config_server_comes_from_public_url_never_the_host_header(accounts_api) -> None:
    """Finding 13c: a forged Host header does not change where the plugin is told the server is."""
    client, _ = accounts_api
    c, email = await account(client)
    forged = {"host": "evil.example:8443"}
    signed_in = await c.post("/api/user/authenticate", json=P.authenticate(email), headers=forged)
    got = await c.get("/api/user/get", headers=forged)
    for r in (signed_in, got):
        assert r.status_code == 200, r.text
        server = json.loads(r.json()["config"])["config"]["server"]
        assert (server["host"], server["port"], server["contextPath"]) == ("https://code4me.test", 443, "")


# ---------------------------------------------------------------- update


async def test_update_name_and_preference_merge_partially(accounts_api) -> None:
    client, state = accounts_api
    c, email = await account(client, preference={"store_context": True, "enabled_modules": ["x"]})
    r = await c.put("/api/user/update", json={"name": "  New Name  "})
    assert r.status_code == 200, r.text
    assert r.json()["user"]["name"] == "New Name"
    # The plugin sends the preference as a JSON string; only the sent keys change.
    r = await c.put(
        "/api/user/update",
        json={"preference": '{"store_behavioral_telemetry": false, "data_retention_days": null}'},
    )
    assert r.status_code == 200, r.text
    pref = r.json()["user"]["preference"]
    assert pref["store_behavioral_telemetry"] is False and pref["data_retention_days"] is None
    assert pref["store_context"] is True and pref["enabled_modules"] == ["x"]
    row = await user_row(state, email)
    assert row.name == "New Name" and row.preference["store_context"] is True
    assert row.preference["data_retention_days"] is None
    # Nulls and unknown keys change nothing; a client cannot mark itself verified.
    r = await c.put("/api/user/update", json={"name": None, "email": None, "verified": True, "extra": 1})
    assert (
        r.status_code == 200
        and r.json()["user"]["name"] == "New Name"
        and r.json()["user"]["verified"] is False
    )


@pytest.mark.parametrize(
    "update, status, words",
    [
        ({"preference": {"data_retention_days": 0}}, 422, "data_retention_days"),
        ({"preference": {"data_retention_days": 5000}}, 422, "data_retention_days"),
        ({"preference": {"store_context": "maybe"}}, 422, "store_context"),
        ({"preference": "{not json"}, 422, "preference"),
        ({"preference": ["a"]}, 422, "preference"),
        ({"preference": {"blob": "x" * 20_000}}, 422, "at most"),
        ({"config_id": 999}, 422, "config_id"),
        ({"config_id": 2**40}, 422, "config_id"),
        ({"name": "nul\x00byte"}, 422, "NUL"),
        ({"preference": {"note": "nul\x00byte"}}, 422, "NUL"),
        ({"name": ""}, 422, "name"),
        ({"email": "not-an-email"}, 422, "email"),
        ({"password": "N3wPassword"}, 422, "previous_password is required"),
        (
            {"password": "N3wPassword", "previous_password": "Wr0ngPassword"},
            403,
            "Previous password is incorrect",
        ),
        ({"password": "weak", "previous_password": P.STRONG_PASSWORD}, 422, "Password must"),
        ({"email": "x@example.org"}, 422, "previous_password is required"),
        ({"email": "x@example.org", "previous_password": "Wr0ngPassword"}, 403, "incorrect"),
    ],
)
async def test_update_rejects_bad_input_and_changes_nothing(accounts_api, update, status, words) -> None:
    client, state = accounts_api
    c, email = await account(client)
    before = await user_row(state, email)
    r = await c.put("/api/user/update", json={"name": "Changed", **update})
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    after = await user_row(state, email)
    assert (after.name, after.email, after.password_hash, after.preference, after.config_id) == (
        before.name,
        before.email,
        before.password_hash,
        before.preference,
        before.config_id,
    )


async def test_password_change_needs_the_old_password(accounts_api) -> None:
    client, _ = accounts_api
    c, email = await account(client)
    r = await c.put(
        "/api/user/update", json={"password": "N3wPassword", "previous_password": P.STRONG_PASSWORD}
    )
    assert r.status_code == 200, r.text
    assert (await client.post("/api/user/authenticate", json=P.authenticate(email))).status_code == 401
    assert (
        await client.post("/api/user/authenticate", json=P.authenticate(email, "N3wPassword"))
    ).status_code == 200


async def test_email_change_is_unique_case_insensitively_and_needs_reverification(
    accounts_api, outbox
) -> None:
    client, state = accounts_api
    _, taken = await account(client)
    c, email = await account(client)
    r = await c.put("/api/user/update", json={"email": taken.upper(), "previous_password": P.STRONG_PASSWORD})
    assert r.status_code == 409
    assert (await user_row(state, email)).email == email
    old_link = link_token(mails_to(outbox, email)[-1], "/api/user/verify")
    new_email = P.new_email()
    r = await c.put("/api/user/update", json={"email": new_email, "previous_password": P.STRONG_PASSWORD})
    assert (
        r.status_code == 200
        and r.json()["user"]["email"] == new_email
        and r.json()["user"]["verified"] is False
    )
    # The link mailed to the old address no longer verifies anything; the new address got its own.
    r = await c.post("/api/user/verify", json={"token": old_link})
    assert r.status_code == 401
    token = link_token(mails_to(outbox, new_email)[-1], "/api/user/verify")
    assert (await c.post("/api/user/verify", json={"token": token})).status_code == 200
    assert (await user_row(state, new_email)).verified
    # Same mailbox, other letter case: allowed, and it stays verified.
    r = await c.put(
        "/api/user/update", json={"email": new_email.upper(), "previous_password": P.STRONG_PASSWORD}
    )
    assert r.status_code == 200 and r.json()["user"]["verified"] is True


async def test_oauth_account_without_password_cannot_change_email_by_update(accounts_api) -> None:
    client, state = accounts_api
    c, email = await account(client)
    async with state.sessionmaker() as db:
        row = (await db.execute(select(User).where(User.email == email))).scalar_one()
        row.password_hash = None
        await db.commit()
    r = await c.put("/api/user/update", json={"email": P.new_email(), "previous_password": "anything"})
    assert r.status_code == 403 and "reset-password" in r.json()["message"]


@pytest.mark.parametrize(
    "create, words",
    [
        ({"name": "nul\x00byte"}, "NUL"),
        ({"config_id": 2**40}, "config_id"),
        ({"preference": {"data_retention_days": 0}}, "data_retention_days"),
    ],
)
async def test_create_refuses_what_the_database_could_not_store(accounts_api, create, words) -> None:
    client, state = accounts_api
    email = P.new_email()
    r = await client.post("/api/user/create", json={**P.user_create(email), **create})
    assert r.status_code == 422 and words in r.json()["message"]
    async with state.sessionmaker() as db:
        assert (await db.execute(select(User).where(User.email == email))).first() is None


async def test_revocation_finds_every_token_even_after_a_session_refresh(accounts_api) -> None:
    _, state = accounts_api
    redis, user_id = state.redis, uuid.uuid4()
    auth = await tokens.issue_auth(redis, user_id, 100)
    # A session of 1 s idle time that slides up to 100 s; its project token lives as long as it can.
    session = await tokens.issue_session(redis, user_id, uuid.uuid4(), auth, 1, max_age_s=100)
    project = await tokens.issue_project(redis, user_id, uuid.uuid4(), session)
    mailed = await email_tokens.issue(redis, "verify", user_id, "x@example.org", 100)
    # The session outlives its first expiry through a refresh; the index must follow it.
    await tokens.refresh_session(redis, session, user_id, 100)
    await asyncio.sleep(1.1)
    assert await redis.exists(tokens.session_key(session)) == 1
    assert 90 < await redis.ttl(tokens.user_tokens_key(user_id)) <= 101
    await tokens.revoke_user(redis, user_id)
    keys = [
        tokens.auth_key(auth),
        tokens.session_key(session),
        tokens.project_key(project),
        tokens.session_projects_key(tokens.digest(session)),
        tokens.session_shadow_key(tokens.digest(session)),
        tokens.auth_sessions_key(tokens.digest(auth)),
        tokens.auth_session_key(tokens.digest(auth)),
        tokens.user_tokens_key(user_id),
        email_tokens.token_key("verify", mailed),
    ]
    assert await redis.exists(*keys) == 0


# ---------------------------------------------------------------- sign-ins (finding 5)


async def device(client: httpx.AsyncClient, email: str, agent: str, password: str = P.STRONG_PASSWORD):  # type: ignore[no-untyped-def]
    """Another sign-in of the account (its own cookie jar and user agent) with a session and a project."""
    d = fresh_client(client)
    d.headers["user-agent"] = agent
    assert (await d.post("/api/user/authenticate", json=P.authenticate(email, password))).status_code == 200
    assert (await d.get("/api/session/acquire")).status_code == 200
    assert (await d.post("/api/project/create", json={"project_name": agent})).status_code == 201
    return d


async def works(d: httpx.AsyncClient) -> tuple[int, int, int]:
    """The answers to the device's auth, session and project tokens: user, acquire (same session), projects."""
    user = (await d.get("/api/user/get")).status_code
    acquired = await d.get("/api/session/acquire")
    same = acquired.status_code if acquired.json().get("session_token") == d.cookies["session_token"] else 409
    r = await d.post("/api/completion/multi-file-context/update", json={"context_updates": {"a.py": []}})
    return user, same, r.status_code


@pytest.mark.parametrize(
    "change",
    [{"password": "N3wPassword!x"}, {"email": "EMAIL"}],
    ids=["password", "email"],
)
async def test_password_or_email_change_ends_the_other_sign_ins(accounts_api, outbox, change) -> None:
    """Finding 5: a new password or email ends every other sign-in's auth, session and project tokens and the
    mailed links; the caller stays signed in with all of its own."""
    client, state = accounts_api
    _, email = await account(client)
    here = await device(client, email, "here")
    there = await device(client, email, "there")
    r = await client.post("/api/user/reset-password/request", json={"email": email})
    reset_link = link_token(mails_to(outbox, email)[-1], "/api/user/reset-password")
    assert await works(here) == await works(there) == (200, 200, 200)
    update = {k: (P.new_email() if v == "EMAIL" else v) for k, v in change.items()}
    r = await here.put("/api/user/update", json={**update, "previous_password": P.STRONG_PASSWORD})
    assert r.status_code == 200, r.text
    assert await works(here) == (200, 200, 200)
    assert (await there.get("/api/user/get")).status_code == 401
    for name in ("session_token", "project_token"):
        assert not await state.redis.exists(
            tokens.session_key(there.cookies[name])
            if name == "session_token"
            else tokens.project_key(there.cookies[name])
        )
    r = await client.post(
        "/api/user/reset-password/change", json={"token": reset_link, "new_password": "R3setPassw0rd"}
    )
    assert r.status_code == 401  # the mailed link died too
    async with state.sessionmaker() as db:
        user = await user_row(state, update.get("email", email))
        rows = (await db.execute(select(Session).where(Session.user_id == user.user_id))).scalars().all()
    assert sorted(row.end_time is None for row in rows) == [False, True]  # there's session ended, here's not
    listed = (await here.get("/api/user/sessions")).json()["sessions"]
    assert [(s["user_agent"], s["current"]) for s in listed] == [("here", True)]


async def test_sign_ins_are_listed_and_ended_by_their_owner_only(accounts_api) -> None:
    """Finding 5: a user lists their sign-ins (never a token) and ends one or all others; another user's
    sign-in is 404, as an unknown one is."""
    client, state = accounts_api
    _, email = await account(client)
    here = await device(client, email, "here/1.0")
    there = await device(client, email, "there/2.0")
    third = await device(client, email, "third/3.0")
    r = await here.get("/api/user/sessions")
    assert r.status_code == 200, r.text
    listed = {s["user_agent"]: s for s in r.json()["sessions"]}
    assert set(listed) == {f"python-httpx/{httpx.__version__}", "here/1.0", "there/2.0", "third/3.0"}
    assert [a for a, s in listed.items() if s["current"]] == ["here/1.0"]
    mine = listed["here/1.0"]
    assert mine["client_address"] == "127.0.0.1" and mine["plugin_sessions"] == 1
    assert mine["created_at"] is not None and mine["last_used_at"] is not None
    for d in (here, there, third):
        for value in d.cookies.values():
            assert value not in r.text and tokens.digest(value) not in r.text

    # Another user cannot end (or see) them.
    mallory, _ = await account(client)
    assert (await mallory.delete(f"/api/user/sessions/{listed['there/2.0']['id']}")).json() == {
        "message": "Session not found"
    }
    assert (await mallory.delete(f"/api/user/sessions/{listed['there/2.0']['id']}")).status_code == 404
    assert [s["current"] for s in (await mallory.get("/api/user/sessions")).json()["sessions"]] == [True]
    assert await works(there) == (200, 200, 200)
    assert (await here.delete("/api/user/sessions/not-a-sign-in")).status_code == 404
    assert (await fresh_client(client).get("/api/user/sessions")).status_code == 401

    # The owner ends one: its auth, session and project tokens go, its session row gets its end time.
    r = await here.delete(f"/api/user/sessions/{listed['there/2.0']['id']}")
    assert r.status_code == 200, r.text
    assert (await there.get("/api/user/get")).status_code == 401
    assert not await state.redis.exists(tokens.session_key(there.cookies["session_token"]))
    assert not await state.redis.exists(tokens.project_key(there.cookies["project_token"]))
    assert await works(third) == await works(here) == (200, 200, 200)

    # Sign out everywhere else: only the caller's sign-in is left.
    r = await here.post("/api/user/sessions/sign-out-others")
    assert r.status_code == 200 and r.json()["ended"] == 2, r.text
    assert (await third.get("/api/user/get")).status_code == 401
    assert await works(here) == (200, 200, 200)
    assert [s["user_agent"] for s in (await here.get("/api/user/sessions")).json()["sessions"]] == [
        "here/1.0"
    ]
    user = await user_row(state, email)
    async with state.sessionmaker() as db:
        rows = (await db.execute(select(Session).where(Session.user_id == user.user_id))).scalars().all()
    assert sorted(row.end_time is None for row in rows) == [False, False, True]
    async with state.sessionmaker() as db:
        records = (
            (await db.execute(select(AuditEvent).where(AuditEvent.actor_id == user.user_id))).scalars().all()
        )
    ends = [r.detail for r in records if r.action == "auth.sign_in_end"]
    assert sorted((d["others"], d["count"]) for d in ends) == [(False, 1), (True, 2)]
    assert [d["sign_ins"] for d in ends if not d["others"]] == [[listed["there/2.0"]["id"]]]


# ---------------------------------------------------------------- verification


async def test_verification_link_flow_is_single_use(accounts_api, outbox) -> None:
    client, state = accounts_api
    c, email = await account(client)
    mails = mails_to(outbox, email)
    assert len(mails) == 1 and "Verify" in mails[0]["Subject"]
    assert f"{PUBLIC_URL}/api/user/verify?token=" in body(mails[0])
    token = link_token(mails[0], "/api/user/verify")
    # Only a hash of the token is in Redis, with the configured lifetime.
    assert await state.redis.exists(f"c4m:email:verify:{token}") == 0
    ttl = await state.redis.ttl(email_tokens.token_key("verify", token))
    assert 0 < ttl <= state.settings.email_token_ttl_s
    r = await c.get("/api/user/verify/check")
    assert r.status_code == 200 and r.json()["user_is_verified"] is False
    # Opening the link shows a form and spends nothing (mail scanners prefetch links).
    page = await client.get(f"/api/user/verify?token={token}")
    assert page.status_code == 200 and "<form" in page.text and token in page.text
    r = await client.post(f"/api/user/verify/?token={token}")  # the old plugin's form of the call
    assert r.status_code == 200, r.text
    assert (await c.get("/api/user/verify/check")).json()["user_is_verified"] is True
    r = await client.post("/api/user/verify", json={"token": token})
    assert r.status_code == 401 and "expired" in r.json()["message"]
    assert (await client.get(f"/api/user/verify?token={token}")).status_code == 401


async def test_verification_by_form_post_answers_html(accounts_api, outbox) -> None:
    client, state = accounts_api
    _, email = await account(client)
    token = link_token(mails_to(outbox, email)[-1], "/api/user/verify")
    r = await client.post("/api/user/verify", data={"token": token})
    assert r.status_code == 200 and "text/html" in r.headers["content-type"] and "verified" in r.text
    r = await client.post("/api/user/verify", data={"token": token})
    assert r.status_code == 401 and "text/html" in r.headers["content-type"]
    assert (await user_row(state, email)).verified


async def test_expired_or_made_up_verification_tokens(accounts_api, outbox) -> None:
    client, state = accounts_api
    _, email = await account(client)
    token = link_token(mails_to(outbox, email)[-1], "/api/user/verify")
    await state.redis.delete(email_tokens.token_key("verify", token))  # what expiry does
    assert (await client.post("/api/user/verify", json={"token": token})).status_code == 401
    assert (await client.post("/api/user/verify", json={"token": "made-up"})).status_code == 401
    r = await client.post("/api/user/verify", json={})
    assert r.status_code == 422 and "token" in r.json()["message"]
    r = await client.post("/api/user/verify", content=b"[1,2]", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert not (await user_row(state, email)).verified


async def test_resend_verification(accounts_api, outbox) -> None:
    client, _ = accounts_api
    c, email = await account(client)
    r = await c.post("/api/user/verify/resend")
    assert r.status_code == 200
    assert len(mails_to(outbox, email)) == 2
    # Without a session, by address: the same answer for unknown addresses, and no mail.
    unknown = P.new_email()
    r1 = await fresh_client(client).post("/api/user/verify/resend", json={"email": email})
    r2 = await fresh_client(client).post("/api/user/verify/resend", json={"email": unknown})
    assert (r1.status_code, r1.json()) == (r2.status_code, r2.json()) == (200, r1.json())
    assert len(mails_to(outbox, email)) == 3 and mails_to(outbox, unknown) == []
    token = link_token(mails_to(outbox, email)[-1], "/api/user/verify")
    assert (await client.post("/api/user/verify", json={"token": token})).status_code == 200
    r = await c.post("/api/user/verify/resend")
    assert r.status_code == 409 and "already verified" in r.json()["message"]
    bad = fresh_client(client)
    bad.cookies.set("auth_token", "made-up")
    assert (await bad.post("/api/user/verify/resend")).status_code == 401


async def test_require_verified_email_blocks_unverified_sign_in(services, accounts_dir, outbox) -> None:
    settings = api_settings(accounts_dir, require_verified_email=True)
    async with running_api(services.database_url, services.redis_url, settings) as (client, _):
        email = P.new_email()
        assert (await client.post("/api/user/create", json=P.user_create(email))).status_code == 201
        r = await client.post("/api/user/authenticate", json=P.authenticate(email))
        assert r.status_code == 403 and "not verified" in r.json()["message"]
        assert "auth_token" not in r.cookies
        # A wrong password does not learn whether the address is verified.
        r = await client.post("/api/user/authenticate", json=P.authenticate(email, "Wr0ngPassword"))
        assert r.status_code == 401
        token = link_token(mails_to(outbox, email)[-1], "/api/user/verify")
        assert (await client.post("/api/user/verify", json={"token": token})).status_code == 200
        assert (await client.post("/api/user/authenticate", json=P.authenticate(email))).status_code == 200


# ---------------------------------------------------------------- password reset


async def test_reset_request_answers_the_same_for_unknown_addresses(accounts_api, outbox) -> None:
    client, _ = accounts_api
    _, email = await account(client)
    unknown = P.new_email()
    known = await client.post("/api/user/reset-password/request", json={"email": email.upper()})
    missing = await client.post("/api/user/reset-password/request", json={"email": unknown})
    assert known.status_code == missing.status_code == 200
    assert known.json() == missing.json()
    assert set(known.cookies) == set(missing.cookies) == set()
    assert [m["Subject"] for m in mails_to(outbox, email)][-1] == "Reset your Code4me password"
    assert mails_to(outbox, unknown) == []
    r = await client.post("/api/user/reset-password/request", json={"email": "nope"})
    assert r.status_code == 422


# ---------------------------------------------------------------- sign-up and mail


async def test_sign_up_answers_the_same_for_taken_addresses(accounts_api, outbox) -> None:
    """Finding 12: a taken address gets the answer a free one gets; its owner is told by mail, nothing changes."""
    client, state = accounts_api
    _, email = await account(client, name="Owner")
    owner = await user_row(state, email)
    before = await count(state, User)
    stranger = fresh_client(client)
    other = {"password": "An0therPassw0rd", "name": "Mallory"}
    taken = await stranger.post("/api/user/create", json=P.user_create(email.upper(), **other))
    free = await stranger.post("/api/user/create", json=P.user_create(P.new_email(), **other))
    assert taken.status_code == free.status_code == 201, taken.text
    assert taken.json().keys() == free.json().keys() == {"message", "user_id"}
    assert taken.json()["message"] == free.json()["message"]
    assert uuid.UUID(taken.json()["user_id"]) != owner.user_id
    assert set(taken.cookies) == set(free.cookies) == set()
    assert await count(state, User) == before + 1  # only the free address got an account
    after = await user_row(state, email)
    assert (after.name, after.password_hash, after.verified) == (owner.name, owner.password_hash, False)
    notice = mails_to(outbox, email)[-1]
    assert notice["Subject"] == "Sign-up attempt with your Code4me address"
    assert "Mallory" not in body(notice) and "token=" not in body(notice)
    r = await stranger.post("/api/user/authenticate", json=P.authenticate(email, other["password"]))
    assert r.status_code == 401


async def test_mails_carry_no_user_chosen_text(accounts_api, outbox) -> None:
    """Finding 13a: a name chosen at sign-up is never put into a mail (anyone may sign up anyone's address)."""
    client, _ = accounts_api
    spam = "Claim your prize at http://prize.example now"
    _, email = await account(client, name=spam)
    r = await client.post("/api/user/reset-password/request", json={"email": email})
    assert r.status_code == 200
    verify, reset = mails_to(outbox, email)
    assert verify["Subject"] == "Verify your email address for Code4me"
    assert body(verify).startswith("Please confirm that this is your email address for Code4me")
    assert body(reset).startswith("Someone asked to reset the password of your Code4me account")
    for mail in (verify, reset):
        assert "prize" not in body(mail) and "prize" not in str(mail["Subject"])


class StallingSmtp:
    """A mail server that accepts connections and says nothing for `stall_s`, then hangs up."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await asyncio.sleep(self.stall_s)
        writer.close()

    async def start(self) -> int:
        """Listen on a free loopback port; which."""
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


async def test_answers_never_wait_for_mail(services, accounts_dir) -> None:
    """Finding 12: sign-up and reset answer before their mail is delivered (a stalled mail server holds no
    request), so a reset for an existing address takes as long as one for an unknown address."""
    smtp = StallingSmtp(stall_s=6.0)
    port = await smtp.start()
    settings = api_settings(accounts_dir, smtp_host="127.0.0.1", smtp_port=port)
    async with running_api(services.database_url, services.redis_url, settings) as (client, _):
        # The plain ASGI transport: the answer as the Serve proxy sees it (the whole ASGI call).
        app = client._transport.app  # type: ignore[attr-defined]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            email = P.new_email()
            started = asyncio.get_running_loop().time()
            assert (await c.post("/api/user/create", json=P.user_create(email))).status_code == 201
            r = await c.post("/api/user/reset-password/request", json={"email": email})
            assert r.status_code == 200
            elapsed = asyncio.get_running_loop().time() - started
            # Two mails stalled for 6 s each: waiting for them would take 12 s; argon2 on a busy machine does not.
            assert elapsed < 4.0, f"the answers waited for the mail server ({elapsed:.1f} s)"
            await asyncio.sleep(0.2)
            assert smtp.connections == 2  # both mails were on their way
    assert smtp.server is not None
    smtp.server.close()


async def test_password_reset_flow(accounts_api, outbox) -> None:
    client, state = accounts_api
    c, email = await account(client)
    await c.get("/api/session/acquire")
    assert (await client.post("/api/user/reset-password/request", json={"email": email})).status_code == 200
    mail = mails_to(outbox, email)[-1]
    assert f"{PUBLIC_URL}/api/user/reset-password?token=" in body(mail)
    token = link_token(mail, "/api/user/reset-password")
    page = await client.get(f"/api/user/reset-password?token={token}")
    assert page.status_code == 200 and 'name="new_password"' in page.text
    # A refused password does not use the link up.
    r = await client.post("/api/user/reset-password/change", json={"token": token, "new_password": "weak"})
    assert r.status_code == 422 and "Password must" in r.json()["message"]
    r = await client.post(
        "/api/user/reset-password/change", json={"token": token, "new_password": "R3setPassword"}
    )
    assert r.status_code == 200, r.text
    # Single use; old password gone; every token of the account ended; the address counts as verified.
    r = await client.post(
        "/api/user/reset-password/change", json={"token": token, "new_password": "An0therPassword"}
    )
    assert r.status_code == 401
    assert (await client.post("/api/user/authenticate", json=P.authenticate(email))).status_code == 401
    assert (
        await client.post("/api/user/authenticate", json=P.authenticate(email, "R3setPassword"))
    ).status_code == 200
    assert (await c.get("/api/user/get")).status_code == 401
    assert (await c.get("/api/session/acquire")).status_code == 401
    assert (await user_row(state, email)).verified


async def test_password_reset_by_form_and_bad_links(accounts_api, outbox) -> None:
    client, _ = accounts_api
    _, email = await account(client)
    await client.post("/api/user/reset-password/request", json={"email": email})
    token = link_token(mails_to(outbox, email)[-1], "/api/user/reset-password")
    r = await client.post(
        "/api/user/reset-password/change", data={"token": token, "new_password": "F0rmPassword"}
    )
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert (
        await client.post("/api/user/authenticate", json=P.authenticate(email, "F0rmPassword"))
    ).status_code == 200
    assert (await client.get(f"/api/user/reset-password?token={token}")).status_code == 401
    assert (await client.get("/api/user/reset-password")).status_code == 401
    r = await client.post(
        "/api/user/reset-password/change", json={"token": "made-up", "new_password": "F0rmPassword"}
    )
    assert r.status_code == 401 and "expired" in r.json()["message"]
    r = await client.post("/api/user/reset-password/change", json={"new_password": "F0rmPassword"})
    assert r.status_code == 422 and "token" in r.json()["message"]
    r = await client.post(
        "/api/user/reset-password/change", data={"token": "made-up", "new_password": "F0rmPassword"}
    )
    assert r.status_code == 401 and "<html" in r.text


async def test_reset_link_dies_when_the_email_changes(accounts_api, outbox) -> None:
    client, _ = accounts_api
    c, email = await account(client)
    await client.post("/api/user/reset-password/request", json={"email": email})
    token = link_token(mails_to(outbox, email)[-1], "/api/user/reset-password")
    r = await c.put("/api/user/update", json={"email": P.new_email(), "previous_password": P.STRONG_PASSWORD})
    assert r.status_code == 200
    r = await client.post(
        "/api/user/reset-password/change", json={"token": token, "new_password": "R3setPassword"}
    )
    assert r.status_code == 401


# ---------------------------------------------------------------- authentication details


async def test_outdated_hash_is_upgraded_at_sign_in(accounts_api) -> None:
    client, state = accounts_api
    _, email = await account(client)
    weak = argon2.using(rounds=1, memory_cost=1024).hash(P.STRONG_PASSWORD)
    async with state.sessionmaker() as db:
        row = (await db.execute(select(User).where(User.email == email))).scalar_one()
        row.password_hash = weak
        await db.commit()
    assert (await client.post("/api/user/authenticate", json=P.authenticate(email))).status_code == 200
    upgraded = (await user_row(state, email)).password_hash
    assert upgraded is not None and upgraded != weak and upgraded.startswith("$argon2")
    assert (await client.post("/api/user/authenticate", json=P.authenticate(email))).status_code == 200


async def test_secrets_never_reach_the_logs(accounts_api, outbox, caplog) -> None:
    client, _ = accounts_api
    caplog.set_level(logging.DEBUG)
    email = P.new_email()
    await client.post("/api/user/create", json=P.user_create(email))
    await client.post("/api/user/authenticate", json=P.authenticate(email, "Wr0ngPassword"))
    r = await client.post("/api/user/authenticate", json=P.authenticate(email))
    await client.post("/api/user/reset-password/request", json={"email": email})
    token = link_token(mails_to(outbox, email)[-1], "/api/user/reset-password")
    await client.post("/api/user/reset-password/change", json={"token": token, "new_password": "L0ggedNever"})
    for secret in (
        email,
        P.STRONG_PASSWORD,
        "Wr0ngPassword",
        "L0ggedNever",
        token,
        r.cookies.get("auth_token"),
    ):
        assert secret and secret not in caplog.text
