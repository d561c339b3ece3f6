"""One error mapping (app/errors.py `answer_of`): HTTP routes, WebSocket operations and the HTML link pages
answer the same status and message for the same problem; OpenAPI declares every error from one helper."""

from __future__ import annotations

from html import escape
from typing import Any

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.services import password_reset, verification
from tests.utils import payloads as P
from tests.utils.asgi_api import model_id, signed_in
from tests.utils.asgi_websocket import AsgiWebSocket


def cookie_header(client: Any) -> dict[str, str]:
    """The signed-in client's cookies as a header, for a socket opened beside it."""
    return {"cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}


async def socket_reply(client: Any, path: str, operation: str, body: Any) -> dict[str, Any]:
    app = client._transport.app
    async with AsgiWebSocket(app, path, cookie_header(client)) as ws:
        await ws.send({"request_id": "r", operation: body})
        while True:
            reply = await ws.receive()
            if reply.get("request_id") == "r" and ("error" in reply or f"{operation}_response" in reply):
                return reply


def invalid_bodies(state: Any) -> list[tuple[str, dict[str, Any]]]:
    good = P.completion_request([model_id(state, "scripted")])
    no_models = {**good, "model_ids": []}
    wrong_type = {**good, "context": {**good["context"], "prefix": 7}}
    missing = {k: v for k, v in good.items() if k != "contextual_telemetry"}
    return [("no models", no_models), ("wrong type", wrong_type), ("missing field", missing)]


async def test_invalid_input_answers_alike_over_http_and_websocket(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    for case, body in invalid_bodies(state):
        r = await c.post("/api/completion/request", json=body)
        reply = await socket_reply(c, "/api/ws/completion", "completion_request", body)
        assert r.status_code == reply["status"] == 422, (case, r.text, reply)
        assert r.json()["message"] == reply["error"], case
        assert r.json()["message"].startswith("Invalid request: "), case
        # Field locations only, never the offending value.
        assert "7" not in r.json()["message"].removeprefix("Invalid request: ").split(":")[0], case


async def test_domain_errors_answer_alike_over_http_and_websocket(api) -> None:
    client, _state = api
    c, _ = await signed_in(client)
    unknown_model = P.completion_request([987_654])
    r = await c.post("/api/completion/request", json=unknown_model)
    reply = await socket_reply(c, "/api/ws/completion", "completion_request", unknown_model)
    assert (
        (r.status_code, r.json()["message"])
        == (reply["status"], reply["error"])
        == (422, "Unknown model id 987654")
    )


def redis_down(*_args: Any, **_kwargs: Any) -> Any:
    raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


async def test_an_outage_is_503_on_the_link_pages_as_in_the_json_api(
    api, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _state = api
    monkeypatch.setattr(verification, "is_live", redis_down)
    monkeypatch.setattr(verification, "verify", redis_down)
    monkeypatch.setattr(password_reset, "check_link", redis_down)
    pages = [
        await client.get("/api/user/verify", params={"token": "t" * 40}),
        await client.get("/api/user/reset-password", params={"token": "t" * 40}),
        await client.post("/api/user/verify", data={"token": "t" * 40}),
    ]
    json_answer = await client.post("/api/user/verify", json={"token": "t" * 40})
    assert json_answer.status_code == 503 and json_answer.headers["retry-after"] == "5"
    for page in pages:
        assert page.status_code == 503, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["retry-after"] == "5"
        assert "Try again later" in page.text and json_answer.json()["message"] in page.text
        assert "Connection refused" not in page.text  # the exception's own text stays out


async def test_a_bad_form_gets_the_json_apis_message_as_a_page(api) -> None:
    client, _state = api
    page = await client.post("/api/user/reset-password/change", data={"token": "x"})
    answer = await client.post("/api/user/reset-password/change", json={"token": "x"})
    assert page.status_code == answer.status_code == 422
    assert answer.json()["message"].startswith("Invalid request: ")
    assert escape(answer.json()["message"]) in page.text


async def test_every_declared_error_has_the_error_schema(api) -> None:
    client, _state = api
    spec = (await client.get("/openapi.json")).json()
    schemas = {"#/components/schemas/ErrorResponse", "#/components/schemas/ValidationErrorResponse"}
    declared = 0
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for status, response in op.get("responses", {}).items():
                if not status.startswith(("4", "5")):
                    continue
                declared += 1
                ref = response["content"]["application/json"]["schema"]["$ref"]
                expected = (
                    "#/components/schemas/OpenAIErrorResponse"  # the OpenAI-compatible API's own shape
                    if path.startswith("/openai/")
                    else "#/components/schemas/ValidationErrorResponse"
                    if status == "422"
                    else "#/components/schemas/ErrorResponse"
                )
                assert ref in {*schemas, "#/components/schemas/OpenAIErrorResponse"} and ref == expected, (
                    method,
                    path,
                    status,
                    ref,
                )
    assert declared > 50


async def test_a_failed_validation_inside_the_server_is_a_bug_not_the_clients_mistake() -> None:
    from fastapi import FastAPI
    from pydantic import BaseModel

    from app.errors import UnhandledErrorMiddleware, install_error_handlers

    class Stored(BaseModel):
        count: int

    app = FastAPI()
    install_error_handlers(app)

    @app.get("/stored")
    async def stored() -> dict[str, int]:
        return {"count": Stored.model_validate({"count": "many"}).count}  # bad data of our own

    app.add_middleware(UnhandledErrorMiddleware)  # as app/main.py installs it
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.get("/stored")
    assert r.status_code == 500 and r.json() == {"message": "Internal server error"}
    assert "many" not in r.text
