"""The one auth chain (app/api/auth.py): HTTP routes and WebSocket operations give the same 401/403 for the same
credentials, the completion path's one-round-trip variant included; AdminUser admits administrators only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlmodel import col

from app.api.deps import AdminUser
from app.errors import install_error_handlers
from app.identity import tokens
from app.infra.state import AppState
from db.tables import User
from tests.utils import payloads as P
from tests.utils.asgi_api import fresh_client, model_id, signed_in
from tests.utils.asgi_websocket import AsgiWebSocket


@dataclass(frozen=True)
class Tokens:
    """One signed-in user's tokens (as the cookies hold them) and the id of their project."""

    auth: str
    session: str
    project: str
    project_id: str


@dataclass(frozen=True)
class People:
    """Two users with live tokens, and three whose auth, session or project token has expired."""

    alice: Tokens
    bob: Tokens
    auth_gone: Tokens
    session_gone: Tokens
    project_gone: Tokens


async def _person(client: httpx.AsyncClient) -> Tokens:
    c, _ = await signed_in(client)
    r = await c.get("/api/project/list")
    assert r.status_code == 200, r.text
    (project,) = r.json()["projects"]
    return Tokens(
        c.cookies["auth_token"], c.cookies["session_token"], c.cookies["project_token"], project["project_id"]
    )


@pytest.fixture(scope="module")
async def people(api) -> People:
    """The module's users; the expired tokens are gone from Redis as if their time had run out."""
    client, state = api
    alice, bob, auth_gone, session_gone, project_gone = [await _person(client) for _ in range(5)]
    await state.redis.delete(
        tokens.auth_key(auth_gone.auth),
        tokens.session_key(session_gone.session),
        tokens.project_key(project_gone.project),
    )
    return People(alice, bob, auth_gone, session_gone, project_gone)


def cookies(
    auth: str | None = None, session: str | None = None, project: str | None = None
) -> dict[str, str]:
    """A Cookie header with the given tokens (none: no header)."""
    sent = {"auth_token": auth, "session_token": session, "project_token": project}
    jar = "; ".join(f"{k}={v}" for k, v in sent.items() if v is not None)
    return {"Cookie": jar} if jar else {}


def all_of(t: Tokens) -> dict[str, str]:
    """Every token of one user, as the plugin sends them."""
    return cookies(t.auth, t.session, t.project)


MISSING_AUTH = (401, "Missing auth token: authenticate first")
BAD_AUTH = (401, "Invalid or expired auth token: authenticate again")
MISSING_SESSION = (401, "Missing session token: acquire a session first")
BAD_SESSION = (401, "Invalid or expired session token: acquire a session again")
OTHERS_SESSION = (403, "Session token belongs to another user")
MISSING_PROJECT = (401, "Missing project token: create or activate a project first")
BAD_PROJECT = (401, "Invalid or expired project token: activate the project again")
OTHERS_PROJECT = (403, "Project token belongs to another user")

# (case, the credentials sent, the answer every route and operation must give)
CASES: list[tuple[str, Callable[[People], dict[str, str]], tuple[int, str]]] = [
    ("no credentials", lambda p: {}, MISSING_AUTH),
    (
        "session and project but no auth token",
        lambda p: cookies(None, p.alice.session, p.alice.project),
        MISSING_AUTH,
    ),
    ("unknown auth token", lambda p: cookies("not-a-token", p.alice.session, p.alice.project), BAD_AUTH),
    ("expired auth token", lambda p: all_of(p.auth_gone), BAD_AUTH),
    ("no session token", lambda p: cookies(p.alice.auth, None, p.alice.project), MISSING_SESSION),
    ("unknown session token", lambda p: cookies(p.alice.auth, "not-a-token", p.alice.project), BAD_SESSION),
    ("expired session token", lambda p: all_of(p.session_gone), BAD_SESSION),
    ("another user's session", lambda p: cookies(p.alice.auth, p.bob.session, p.bob.project), OTHERS_SESSION),
    (
        "another user's session, by headers",
        lambda p: {"Authorization": f"Bearer {p.alice.auth}", "X-Session-Token": p.bob.session},
        OTHERS_SESSION,
    ),
    ("no project token", lambda p: cookies(p.alice.auth, p.alice.session), MISSING_PROJECT),
    ("unknown project token", lambda p: cookies(p.alice.auth, p.alice.session, "not-a-token"), BAD_PROJECT),
    ("expired project token", lambda p: all_of(p.project_gone), BAD_PROJECT),
    (
        "another user's project",
        lambda p: cookies(p.alice.auth, p.alice.session, p.bob.project),
        OTHERS_PROJECT,
    ),
    # The plugin sends a project id as its project token: it means this session's activation, which is none.
    (
        "another user's project id",
        lambda p: cookies(p.alice.auth, p.alice.session, p.bob.project_id),
        BAD_PROJECT,
    ),
]


@dataclass(frozen=True)
class Route:
    """An HTTP route and the WebSocket operation that does the same, with a valid body for both."""

    method: str
    path: str
    socket: str
    operation: str
    body: Callable[[AppState], Any]


ROUTES = [
    Route(
        "POST",
        "/api/completion/request",
        "/api/ws/completion",
        "completion_request",
        lambda s: P.completion_request([model_id(s, "scripted")]),
    ),
    Route(
        "POST",
        "/api/chat/request",
        "/api/ws/chat",
        "chat_request",
        lambda s: {
            "model_ids": [model_id(s, "chatty")],
            "chat_id": str(uuid.uuid4()),
            "messages": [["user", "hello"]],
            "context": {
                "prefix": "",
                "suffix": "",
                "file_name": "a.py",
                "selected_text": "",
                "context_files": [],
            },
            "contextual_telemetry": {"version_id": 1, "trigger_type_id": 1, "language_id": 1},
            "behavioral_telemetry": {},
            "web_enabled": False,
        },
    ),
    Route("GET", "/api/chat/get/0", "/api/ws/chat", "chat_get", lambda s: {"page_number": 0}),
    Route(
        "POST",
        "/api/completion/multi-file-context/update",
        "/api/ws/completion/multi-file-context",
        "multi_file_context_update",
        lambda s: {"context_updates": {}},
    ),
]


async def over_http(
    client: httpx.AsyncClient, state: AppState, route: Route, headers: dict[str, str]
) -> tuple[int, Any]:
    """(status, body) of the route called with only these headers."""
    body = route.body(state)
    async with fresh_client(client) as c:
        if route.method == "GET":
            r = await c.get(route.path, headers=headers)
        else:
            r = await c.request(route.method, route.path, json=body, headers=headers)
    return r.status_code, r.json()


async def over_socket(
    client: httpx.AsyncClient, state: AppState, route: Route, headers: dict[str, str]
) -> dict[str, Any]:
    """The reply to the route's operation on a socket opened with these headers."""
    app = client._transport.app  # type: ignore[attr-defined]
    async with AsgiWebSocket(app, route.socket, headers) as ws:
        await ws.send({"request_id": "r", route.operation: route.body(state)})
        while True:
            reply = await ws.receive()
            if reply.get("request_id") == "r" and (
                "error" in reply or f"{route.operation}_response" in reply
            ):
                return reply


@pytest.mark.parametrize("route", ROUTES, ids=[r.operation for r in ROUTES])
@pytest.mark.parametrize(("case", "credentials", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_http_and_websocket_refuse_alike(api, people, route, case, credentials, expected) -> None:
    client, state = api
    headers = credentials(people)
    status, body = await over_http(client, state, route, headers)
    assert (status, body.get("message")) == expected, (case, route.path, body)
    reply = await over_socket(client, state, route, headers)
    assert (reply.get("status"), reply.get("error")) == expected, (case, route.operation, reply)


@pytest.mark.parametrize("route", ROUTES, ids=[r.operation for r in ROUTES])
async def test_http_and_websocket_accept_alike(api, people, route) -> None:
    client, state = api
    headers = all_of(people.alice)
    status, body = await over_http(client, state, route, headers)
    assert status == 200, body
    reply = await over_socket(client, state, route, headers)
    assert f"{route.operation}_response" in reply, reply


# ---------------------------------------------------------------- AdminUser


def admin_app(state: AppState) -> FastAPI:
    """A test app with one route behind AdminUser, on the module's state (no such route ships)."""
    app = FastAPI()
    install_error_handlers(app)
    app.state.c4m = state

    @app.get("/admin-only")
    async def admin_only(user: AdminUser) -> dict[str, str]:
        return {"email": user.email}

    return app


async def test_admin_user_admits_administrators_only(api) -> None:
    client, state = api
    admin, admin_email = await signed_in(client)
    plain, _ = await signed_in(client)
    async with state.sessionmaker() as db:
        await db.execute(update(User).where(col(User.email) == admin_email).values(is_admin=True))
        await db.commit()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=admin_app(state)), base_url="http://test"
    ) as c:
        r = await c.get("/admin-only", headers=cookies(admin.cookies["auth_token"]))
        assert r.status_code == 200 and r.json() == {"email": admin_email}, r.text
        r = await c.get("/admin-only", headers=cookies(plain.cookies["auth_token"]))
        assert (r.status_code, r.json()) == (403, {"message": "Administrator access required"})
        r = await c.get("/admin-only")
        assert (r.status_code, r.json()) == (401, {"message": "Missing auth token: authenticate first"})
        r = await c.get("/admin-only", headers=cookies("not-a-token"))
        assert (r.status_code, r.json()) == (
            401,
            {"message": "Invalid or expired auth token: authenticate again"},
        )


async def _everything_in(redis: Any) -> list[str]:
    """Every key name of the Redis database and every value held under it, as text."""
    seen: list[str] = []
    async for raw_key in redis.scan_iter(count=1000):
        key = raw_key.decode()
        seen.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            values = [await redis.get(key)]
        elif kind == "set":
            values = list(await redis.smembers(key))
        elif kind == "zset":
            values = list(await redis.zrange(key, 0, -1))
        elif kind == "hash":
            values = [v for pair in (await redis.hgetall(key)).items() for v in pair]
        elif kind == "list":
            values = list(await redis.lrange(key, 0, -1))
        else:  # streams: telemetry events, which never carry tokens (checked like the rest)
            values = [str(await redis.xrange(key))]
        seen += [
            v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values if v is not None
        ]
    return seen


async def test_redis_holds_no_token_nor_its_plain_hash(api) -> None:
    """Finding 13d: no key name or value in Redis holds a client's token (an AOF file or dump would hand out
    sign-ins), nor its unkeyed SHA-256 (which would let a dump check guessed or leaked tokens)."""
    import hashlib

    from tests.utils.outbox import link_token, mails_to

    client, state = api
    c, email = await signed_in(client)
    await c.post("/api/project/create", json={"project_name": "second"})  # an activation alias too
    r = await c.post("/api/user/reset-password/request", json={"email": email})
    assert r.status_code == 200
    verify, reset = mails_to(state.settings.outbox_dir, email)
    secrets = [
        c.cookies["auth_token"],
        c.cookies["session_token"],
        c.cookies["project_token"],
        link_token(verify, "/api/user/verify"),
        link_token(reset, "/api/user/reset-password"),
    ]
    # They work: what Redis holds stands for them.
    assert (await c.get("/api/session/acquire")).json()["session_token"] == c.cookies["session_token"]
    assert (await c.get("/api/project/list")).status_code == 200
    everything = "\n".join(await _everything_in(state.redis))
    for secret in secrets:
        assert secret not in everything
        assert hashlib.sha256(secret.encode()).hexdigest() not in everything
