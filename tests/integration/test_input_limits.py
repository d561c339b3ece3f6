"""Body size limits, hostile inputs and log hygiene: every client mistake is a clear 4xx, nothing is stored or logged."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest
from fastapi import WebSocket
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from app.bootstrap import build_state
from app.infra.settings import Settings
from app.main import create_app
from db.tables import Context, MetaQuery, User
from tests.utils import payloads as P
from tests.utils.asgi_api import ENTRIES, ScriptedGateway, cards_of, count, model_id, signed_in
from tests.utils.replicas import client_for, replica

LIMIT = 4096


async def test_declared_body_over_the_limit_is_413_before_anything_runs(services) -> None:
    async with replica(services, max_body_bytes=LIMIT, rate_limit_enabled=False) as (app, state):
        c = client_for(app)
        before = await count(state, User)
        r = await c.post("/api/user/create", json={**P.user_create(), "name": "x" * LIMIT})
        assert r.status_code == 413 and r.json() == {
            "message": f"Request body is over the limit of {LIMIT} bytes"
        }
        assert await count(state, User) == before
        # Exactly at the limit is fine (here: a 422 for the name's own length rule, from the app).
        body = json.dumps({**P.user_create(), "name": ""}).encode()
        padded = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
        r = await c.post("/api/user/create", content=padded, headers={"content-type": "application/json"})
        assert len(padded) == LIMIT and r.status_code == 422


async def test_streamed_body_without_content_length_is_counted(services) -> None:
    async with replica(services, max_body_bytes=LIMIT, rate_limit_enabled=False) as (app, state):
        c = client_for(app)

        async def chunks(total: int) -> AsyncIterator[bytes]:
            yield b'{"email": "a@example.org", "name": "'
            for _ in range(total // 1000):
                yield b"x" * 1000
            yield b'", "password": "Str0ngPassw0rd"}'

        before = await count(state, User)
        r = await c.post(
            "/api/user/create", content=chunks(LIMIT * 3), headers={"content-type": "application/json"}
        )
        assert "content-length" not in r.request.headers
        assert r.status_code == 413 and "over the limit" in r.json()["message"]
        r = await c.post(
            "/api/user/create", content=chunks(2000), headers={"content-type": "application/json"}
        )
        assert r.status_code == 422  # small enough: reaches the app (the name is over 200 characters)
        assert await count(state, User) == before


async def test_bad_content_length_is_400(services) -> None:
    async with replica(services, rate_limit_enabled=False) as (app, _):
        c = client_for(app)
        r = await c.post(
            "/api/user/create",
            content=b"{}",
            headers={"content-type": "application/json", "content-length": "x"},
        )
        assert r.status_code == 400 and r.json() == {"message": "Invalid Content-Length header"}


def _with(path: str, value: object) -> object:
    """A completion body with one field (dotted path) replaced."""

    def build(state) -> dict:  # type: ignore[no-untyped-def]
        body = P.completion_request([model_id(state, "scripted")])
        *parents, leaf = path.split(".")
        target = body
        for p in parents:
            target = target[p]
        target[leaf] = value
        return body

    return build


RAW = "raw"
HOSTILE = [
    # (id, method, path, body or raw bytes, expected status)
    ("malformed json", "POST", "/api/completion/request", (RAW, b'{"model_ids": [1'), 422),
    ("not utf-8", "POST", "/api/completion/request", (RAW, b'{"context": {"prefix": "\xff\xfe"}}'), 400),
    ("deeply nested", "POST", "/api/completion/request", (RAW, b"[" * 50_000), 400),
    ("array body", "POST", "/api/completion/request", (RAW, b"[]"), 422),
    ("empty body", "POST", "/api/completion/request", (RAW, b""), 422),
    (
        "NaN",
        "POST",
        "/api/completion/request",
        (RAW, b'{"behavioral_telemetry": {"typing_speed": NaN}}'),
        422,
    ),
    ("huge model id", "POST", "/api/completion/request", _with("model_ids", [10**40]), 422),
    (
        "huge caret line",
        "POST",
        "/api/completion/request",
        _with("contextual_telemetry.caret_line", 2**31),
        422,
    ),
    (
        "huge time",
        "POST",
        "/api/completion/request",
        _with("behavioral_telemetry.time_since_last_shown", 2**63),
        422,
    ),
    (
        "huge language id",
        "POST",
        "/api/completion/request",
        _with("contextual_telemetry.language_id", -(2**40)),
        422,
    ),
    (
        "infinity",
        "POST",
        "/api/completion/request",
        (RAW, b'{"behavioral_telemetry": {"typing_speed": Infinity}}'),
        422,
    ),
    ("wrong type", "POST", "/api/completion/request", _with("context", "import os"), 422),
    ("bool as list", "POST", "/api/completion/request", _with("model_ids", True), 422),
    ("NUL in prefix", "POST", "/api/completion/request", _with("context.prefix", "a\x00b"), 422),
    ("NUL in stop", "POST", "/api/completion/request", _with("stop_sequences", ["\x00"]), 422),
    ("surrogate", "POST", "/api/completion/request", (RAW, b'{"context": {"prefix": "\\ud800"}}'), 422),
    ("context too long", "POST", "/api/completion/request", _with("context.suffix", "y" * 20_000), 413),
    ("bad uuid in path", "GET", "/api/completion/not-a-uuid", None, 422),
    ("huge number in path", "GET", f"/api/project/get/{10**60}", None, 422),
    (
        "bad uuid in body",
        "POST",
        "/api/completion/feedback",
        {"meta_query_id": "x", "model_id": 1, "was_accepted": True},
        422,
    ),
    (
        "huge feedback model",
        "POST",
        "/api/completion/feedback",
        {"meta_query_id": "00000000-0000-0000-0000-000000000000", "model_id": 2**31, "was_accepted": True},
        422,
    ),
    (
        "NUL in ground truth",
        "POST",
        "/api/completion/feedback",
        {
            "meta_query_id": "00000000-0000-0000-0000-000000000000",
            "model_id": 1,
            "was_accepted": True,
            "ground_truth": "\x00",
        },
        422,
    ),
    ("NUL in name", "POST", "/api/user/create", {**P.user_create(), "name": "a\x00"}, 422),
    (
        "NUL in preference key",
        "POST",
        "/api/user/create",
        {**P.user_create(), "preference": {"a\x00": 1}},
        422,
    ),
    ("huge config id", "POST", "/api/user/create", {**P.user_create(), "config_id": 2**31}, 422),
    ("NUL in project name", "POST", "/api/project/create", {"project_name": "\x00"}, 422),
    ("project id as int", "PUT", "/api/project/activate", {"project_id": 7}, 422),
    ("NUL in invitation token", "POST", "/api/project/invitation/accept", {"token": "\x00"}, 422),
    ("form instead of json", "POST", "/api/project/create", (RAW, b"project_name=x"), 422),
    ("unknown route", "POST", "/api/completion/nowhere/at/all", None, 404),
    ("wrong method", "DELETE", "/api/completion/request", None, 405),
]


@pytest.mark.parametrize("method, path, body, status", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
async def test_hostile_inputs_get_a_clear_4xx_and_store_nothing(api, method, path, body, status) -> None:
    client, state = api
    c, _ = await signed_in(client)
    kwargs: dict = {}
    if isinstance(body, tuple):
        kwargs = {"content": body[1], "headers": {"content-type": "application/json"}}
    elif callable(body):
        kwargs = {"json": body(state)}
    elif body is not None:
        kwargs = {"json": body}
    before = [await count(state, t) for t in (MetaQuery, Context, User)]
    r = await c.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["message"], str) and r.json()["message"]
    assert [await count(state, t) for t in (MetaQuery, Context, User)] == before


def test_websocket_message_over_the_limit_closes_1009(services) -> None:
    settings = Settings(environment="test", max_body_bytes=LIMIT, rate_limit_enabled=False)

    def make_state():  # type: ignore[no-untyped-def]
        return build_state(
            settings, services.database_url, services.redis_url, ScriptedGateway(), cards_of(ENTRIES)
        )

    app = create_app(make_state)
    closed: list[int] = []

    @app.websocket("/api/ws/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect as exc:
            closed.append(exc.code)

    with TestClient(app) as tc, tc.websocket_connect("/api/ws/echo") as ws:
        ws.send_text("small")
        assert ws.receive_text() == "small"
        ws.send_text("x" * (LIMIT + 1))
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_text()
        assert exc.value.code == 1009
    assert closed == [1009]


SECRET = "AKIAIOSFODNN7EXAMPLE-secret-in-context"


async def test_nothing_the_client_sent_reaches_the_logs(services, caplog) -> None:
    """Bodies, cookies, tokens, code context and exception messages stay out of every log record."""
    async with replica(services, rate_limit_auth=100) as (app, state):

        @app.get("/api/test/explode/{token}")
        async def explode(token: str) -> None:
            raise RuntimeError(f"boom with {token} and {SECRET}")

        explode_line = explode.__code__.co_firstlineno + 2

        caplog.set_level(logging.DEBUG)
        # raise_app_exceptions on: the exception must not escape the app (servers above would log it).
        c, email = await signed_in(client_for(app))
        body = P.completion_request(
            [model_id(state, "scripted"), model_id(state, "broken")], prefix=f"key = '{SECRET}'\n"
        )
        assert (await c.post("/api/completion/request", json=body)).status_code == 200
        assert (
            await c.post("/api/completion/request?auth_token=leak", json={"context": SECRET})
        ).status_code == 422
        r = await c.get(f"/api/test/explode/{SECRET}?token=querysecret")
        assert r.status_code == 500 and r.json() == {"message": "Internal server error"}
        assert (
            await c.post("/api/user/authenticate", json=P.authenticate(email, "Wr0ng" + SECRET))
        ).status_code == 401

        # The test's own HTTP client (httpx) logs the URLs it calls; everything else is the server.
        server = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
        logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in server)
        assert "unhandled RuntimeError on GET /api/test/explode/{token}" in logged
        # A 500 is one record on one line: its type, route and code locations (the raise's frame last).
        (bug,) = [r for r in server if "unhandled RuntimeError" in r.getMessage()]
        assert "\n" not in bug.getMessage() and bug.exc_info is None
        assert bug.getMessage().endswith(f"test_input_limits.py:{explode_line} in explode")
        forbidden = [SECRET, "querysecret", "leak", email, *(v for v in c.cookies.values())]
        assert not [s for s in forbidden if s in logged]


def test_websocket_bug_closes_1011_and_logs_no_message(services, caplog) -> None:
    settings = Settings(environment="test", rate_limit_enabled=False)

    def make_state():  # type: ignore[no-untyped-def]
        return build_state(
            settings, services.database_url, services.redis_url, ScriptedGateway(), cards_of(ENTRIES)
        )

    app = create_app(make_state)

    @app.websocket("/api/ws/broken")
    async def broken(websocket: WebSocket) -> None:
        await websocket.accept()
        raise RuntimeError(await websocket.receive_text())

    caplog.set_level(logging.DEBUG)
    with TestClient(app) as tc, tc.websocket_connect("/api/ws/broken") as ws:
        ws.send_text(SECRET)
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_text()
        assert exc.value.code == 1011
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "unhandled RuntimeError on WEBSOCKET /api/ws/broken" in logged and SECRET not in logged
