"""The WebSocket protocol on a real uvicorn server over real PostgreSQL and Redis (scripted models)."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets

from app.infra.state import AppState
from db.tables import MetaQuery
from serve.embedded import ServiceUrls
from tests.utils import payloads as P
from tests.utils.asgi_api import api_settings, count, model_id, running_api, settle, signed_in


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
async def live(
    services: ServiceUrls, data_dir: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState, str]]:
    """The app behind a real HTTP/WebSocket server; yields an in-process client, the state and the ws:// base."""
    async with running_api(services.database_url, services.redis_url, api_settings(data_dir)) as (
        client,
        state,
    ):
        port = _free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                client._transport.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"
            )
        )  # type: ignore[attr-defined]
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        try:
            yield client, state, f"ws://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task


def cookie_header(client: httpx.AsyncClient) -> dict[str, str]:
    """The plugin's cookie jar as one Cookie header."""
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}


async def receive(ws: Any, timeout: float = 10.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws: Any, key: str, request_id: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read until the reply carrying `key` for request_id; also return everything read before it."""
    seen = []
    while True:
        msg = await receive(ws)
        if key in msg and msg.get("request_id") == request_id:
            return msg, seen
        seen.append(msg)


@pytest.mark.parametrize(
    "path", ["/api/ws/completion", "/api/ws/completion/multi-file-context", "/api/ws/chat"]
)
async def test_handshakes_from_other_origins_are_refused(live, path) -> None:
    """Finding 13b: a browser page of another site (its Origin) gets 403 before accept, even with the user's
    cookies; no Origin (the plugin) and PUBLIC_URL's origin are accepted."""
    client, state, base = live
    c, _ = await signed_in(client)
    for origin in ("https://evil.example", "null", "http://127.0.0.1:8001", "https://127.0.0.1:8000"):
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(
                f"{base}{path}", additional_headers={**cookie_header(c), "Origin": origin}
            ):
                pass
        assert refused.value.response.status_code == 403, origin
    assert state.settings.public_base_url == "http://127.0.0.1:8000"
    for headers in ({}, {"Origin": "http://127.0.0.1:8000"}, {"Origin": "HTTP://127.0.0.1:8000"}):
        async with websockets.connect(
            f"{base}{path}", additional_headers={**cookie_header(c), **headers}
        ) as ws:
            await ws.send(json.dumps({"request_id": "c1", "cancel": {"request_id": "nothing"}}))
            assert (await receive(ws))["request_id"] == "c1"


async def test_plugin_session_over_websockets(live) -> None:
    client, state, base = live
    c, _ = await signed_in(client)
    ids = [model_id(state, "scripted"), model_id(state, "broken")]
    async with websockets.connect(f"{base}/api/ws/completion", additional_headers=cookie_header(c)) as ws:
        await ws.send(json.dumps({"request_id": "r1", "completion_request": P.completion_request(ids)}))
        final, before = await until(ws, "completion_request_response", "r1")
        partials = [
            m["completion_partial"] for m in before if "completion_partial" in m and m["request_id"] == "r1"
        ]
        assert sorted(p["completion"]["model_name"] for p in partials) == ["broken", "scripted"]
        data = final["completion_request_response"]["data"]
        assert {p["meta_query_id"] for p in partials} == {data["meta_query_id"]}
        assert [s["model_name"] for s in data["completions"]] == ["scripted", "broken"]
        assert data["completions"][1]["message"] == "Completion for model failed"
        for n, truth in enumerate(["read()", "read()\n", "read()  # done"]):
            fb = {
                "meta_query_id": data["meta_query_id"],
                "model_id": ids[0],
                "was_accepted": True,
                "ground_truth": truth,
            }
            await ws.send(json.dumps({"request_id": f"f{n}", "completion_feedback": fb}))
            reply, _ = await until(ws, "completion_feedback_response", f"f{n}")
            assert reply["completion_feedback_response"]["data"]["model_id"] == ids[0]

        # Bad messages get an error and the socket stays usable.
        for bad, words in [
            ("{not json", "not valid JSON"),
            ("[1, 2]", "JSON object"),
            (json.dumps({"request_id": "b1", "fly_to_moon": {}}), "Unknown operation"),
            (json.dumps({"request_id": "b2", "completion_request": {"model_ids": []}}), "model_ids"),
            (
                json.dumps({"request_id": "b3", "completion_feedback": {}, "chat_get": {}}),
                "exactly one operation",
            ),
            (json.dumps({"request_id": "b4", "cancel": {"request_id": "never"}}), "No operation"),
        ]:
            await ws.send(bad)
            msg = await receive(ws)
            assert words in msg["error"], (bad, msg)
        await ws.send(json.dumps({"request_id": "ok", "completion_request": P.completion_request(ids[:1])}))
        reply, _ = await until(ws, "completion_request_response", "ok")
        assert reply["completion_request_response"]["data"]["completions"][0]["completion"] == "read()"

    async with websockets.connect(
        f"{base}/api/ws/completion/multi-file-context", additional_headers=cookie_header(c)
    ) as ws:
        change = {
            "change_type": "insert",
            "start_line": 0,
            "end_line": 0,
            "new_lines": ["x = 1", "42", "null"],
        }
        await ws.send(
            json.dumps(
                {"request_id": "m", "multi_file_context_update": {"context_updates": {"a.py": [change]}}}
            )
        )
        reply, _ = await until(ws, "multi_file_context_update_response", "m")
        assert reply["multi_file_context_update_response"]["data"] == {"a.py": ["x = 1", "42", "null"]}

    chat_id = str(uuid.uuid4())
    chat = {
        "model_ids": [model_id(state, "chatty")],
        "chat_id": chat_id,
        "messages": [["user", "Explain generators"]],
        "context": {"prefix": "", "suffix": ""},
    }
    async with websockets.connect(f"{base}/api/ws/chat", additional_headers=cookie_header(c)) as ws:
        await ws.send(json.dumps({"request_id": 7, "chat_request": chat}))
        final, before = await until(ws, "chat_request_response", "7")
        pieces = [m["chat_token"]["text"] for m in before if "chat_token" in m]
        answer = final["chat_request_response"]["history"][0]["assistant_responses"][0]["completion"]
        assert len(pieces) >= 2 and "".join(pieces) == answer == "You asked: Explain generators"
        assert final["chat_request_response"]["title"] == "Explain generators"
        await settle(state)
        await ws.send(json.dumps({"request_id": "g", "chat_get": {"page_number": 0}}))
        page, _ = await until(ws, "chat_get_response", "g")
        assert [i["chat_id"] for i in page["chat_get_response"]["items"]] == [chat_id]
        await ws.send(json.dumps({"request_id": "d", "chat_delete": {"chat_id": chat_id}}))
        gone, _ = await until(ws, "chat_delete_response", "d")
        assert gone["chat_delete_response"]["chat_id"] == chat_id


async def test_two_requests_in_flight_and_one_cancelled(live) -> None:
    client, state, base = live
    c, _ = await signed_in(client)
    fast, slow = model_id(state, "scripted"), model_id(state, "slow")
    async with websockets.connect(f"{base}/api/ws/completion", additional_headers=cookie_header(c)) as ws:
        await ws.send(json.dumps({"request_id": "warm", "completion_request": P.completion_request([fast])}))
        first, _ = await until(ws, "completion_request_response", "warm")
        qid = first["completion_request_response"]["data"]["meta_query_id"]
        await settle(state)
        queries_before = await count(state, MetaQuery)

        await ws.send(json.dumps({"request_id": "slow", "completion_request": P.completion_request([slow])}))
        fb = {"meta_query_id": qid, "model_id": fast, "was_accepted": True, "ground_truth": "read()"}
        await ws.send(json.dumps({"request_id": "fb", "completion_feedback": fb}))
        _reply, before = await until(
            ws, "completion_feedback_response", "fb"
        )  # answered while "slow" still runs
        assert not any(m.get("request_id") == "slow" for m in before)
        await ws.send(json.dumps({"request_id": "stop", "cancel": {"request_id": "slow"}}))
        replies = [await receive(ws), await receive(ws)]
        assert {"request_id": "slow", "cancelled": True} in replies
        assert {"request_id": "stop", "cancel_response": {"request_id": "slow", "cancelled": True}} in replies
    await settle(state)
    assert await count(state, MetaQuery) == queries_before  # the cancelled query was never stored


async def test_socket_without_login_answers_401_and_stays_open(live) -> None:
    _client, _state, base = live
    async with websockets.connect(f"{base}/api/ws/completion/") as ws:
        for n in range(2):
            await ws.send(
                json.dumps(
                    {
                        "request_id": n,
                        "completion_feedback": {
                            "meta_query_id": str(uuid.uuid4()),
                            "model_id": 1,
                            "was_accepted": True,
                        },
                    }
                )
            )
            msg = await receive(ws)
            assert msg["status"] == 401 and "auth token" in msg["error"] and msg["request_id"] == str(n)


async def test_an_outage_is_a_503_with_retry_after_and_logs_no_message(live, caplog) -> None:
    import logging

    from redis.asyncio import Redis

    client, state, base = live
    c, _ = await signed_in(client)
    ids = [model_id(state, "scripted")]
    async with websockets.connect(f"{base}/api/ws/completion", additional_headers=cookie_header(c)) as ws:
        working, down = state.redis, Redis.from_url("redis://127.0.0.1:9/0")  # nothing listens on port 9
        state.redis = down
        try:
            with caplog.at_level(logging.INFO):
                await ws.send(
                    json.dumps({"request_id": "o1", "completion_request": P.completion_request(ids)})
                )
                reply, _ = await until(ws, "error", "o1")
        finally:
            state.redis = working
            await down.aclose()
        # As over HTTP: 503 with when to retry, not a 500; the socket stays open and works again.
        assert reply["status"] == 503 and reply["retry_after"] == 5 and "unavailable" in reply["error"]
        await ws.send(json.dumps({"request_id": "o2", "completion_request": P.completion_request(ids)}))
        ok, _ = await until(ws, "completion_request_response", "o2")
        assert ok["completion_request_response"]["data"]["completions"][0]["completion"] == "read()"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "ConnectionError" in logged  # the exception's type is logged ...
    assert "127.0.0.1:9" not in logged and "refused" not in logged.lower()  # ... never its message
