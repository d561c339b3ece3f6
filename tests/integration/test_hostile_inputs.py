"""Inputs that used to answer 500 (some committed first): each is a 4xx now, and nothing invalid is stored."""

from __future__ import annotations

import json
from typing import Any

from tests.utils.asgi_api import signed_in
from tests.utils.asgi_websocket import AsgiWebSocket

CONTEXT_URL = "/api/completion/multi-file-context/update"


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"down": value}
    return value


async def test_non_finite_numbers_in_a_preference_are_refused(api) -> None:
    client, _state = api
    c, _ = await signed_in(client)
    for raw in (
        '{"preference": {"x": NaN}}',
        '{"preference": {"x": -Infinity}}',
        '{"preference": {"x": 1e400}}',
    ):
        r = await c.put("/api/user/update", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (raw, r.text)
        assert "NaN or Infinity" in r.json()["message"]
    # Some plugin versions send the preference as a string holding JSON: the same rule.
    r = await c.put("/api/user/update", json={"preference": '{"x": Infinity}'})
    assert r.status_code == 422, r.text
    assert (await c.get("/api/user/get")).status_code == 200


async def test_a_deeply_nested_preference_is_refused_before_anything_is_committed(api) -> None:
    client, _state = api
    c, _ = await signed_in(client)
    r = await c.put("/api/user/update", json={"preference": nested(300)})
    assert r.status_code == 422 and "nested at most" in r.json()["message"], r.text
    # The account still answers (a committed deep preference made every later read of it fail).
    got = await c.get("/api/user/get")
    assert got.status_code == 200, got.text
    assert "down" not in json.dumps(got.json()["user"]["preference"])
    # Shallow free-form keys of the plugin are still kept.
    r = await c.put("/api/user/update", json={"preference": {"module_values": nested(5)}})
    assert r.status_code == 200, r.text


async def test_a_line_break_inside_a_context_line_is_refused(api) -> None:
    client, _state = api
    c, _ = await signed_in(client)
    change = {"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": ["a = 1\nb = 2"]}
    r = await c.post(CONTEXT_URL, json={"context_updates": {"src/a.py": [change]}})
    assert r.status_code == 422 and "new_lines" in r.json()["message"], r.text
    change["new_lines"] = ["a = 1", "b = 2"]
    r = await c.post(CONTEXT_URL, json={"context_updates": {"src/a.py": [change]}})
    assert r.status_code == 200 and r.json()["data"]["src/a.py"] == ["a = 1", "b = 2"], r.text


async def test_a_deeply_nested_websocket_message_gets_an_error_and_the_socket_stays(api) -> None:
    client, _state = api
    c, _ = await signed_in(client)
    cookie = {"cookie": "; ".join(f"{k}={v}" for k, v in c.cookies.items())}
    app = client._transport.app  # type: ignore[attr-defined]
    async with AsgiWebSocket(app, "/api/ws/completion", cookie) as ws:
        deep = '{"a":' * 100_000 + "1" + "}" * 100_000
        await ws.send_text(deep)
        reply = await ws.receive()
        assert reply["status"] == 422 and "nested too deeply" in reply["error"], reply
        await ws.send({"request_id": "after", "fly_to_moon": {}})
        reply = await ws.receive()
        assert reply["request_id"] == "after" and reply["status"] == 422


async def _live_keys(state: Any, pattern: str) -> list[Any]:
    return [k async for k in state.redis.scan_iter(match=pattern)]


async def _with_live_code(client: Any) -> tuple[Any, str]:
    """A signed-in user whose project holds a live file; (client, project id)."""
    c, _ = await signed_in(client)
    change = {"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": ["SECRET_CODE = 1"]}
    r = await c.post(CONTEXT_URL, json={"context_updates": {"src/a.py": [change]}})
    assert r.status_code == 200, r.text
    (project,) = (await c.get("/api/project/list")).json()["projects"]
    return c, project["project_id"]


async def test_deleting_a_project_drops_its_live_code(api) -> None:
    client, state = api
    c, project_id = await _with_live_code(client)
    assert await _live_keys(state, f"c4m:ctx:{project_id}:*")
    r = await c.delete(f"/api/project/delete/{project_id}")
    assert r.status_code == 200, r.text
    assert await _live_keys(state, f"c4m:ctx:{project_id}:*") == []


async def test_deleting_an_account_drops_its_live_code_either_way(api) -> None:
    client, state = api
    for delete_data in ("true", "false"):
        c, _project_id = await _with_live_code(client)
        user_id = (await c.get("/api/user/get")).json()["user"]["user_id"]
        assert await _live_keys(state, f"c4m:ctx:*:{user_id}*")
        r = await c.delete("/api/user/delete", params={"delete_data": delete_data})
        assert r.status_code == 200, r.text
        assert await _live_keys(state, f"c4m:ctx:*:{user_id}*") == [], delete_data


async def test_a_huge_request_id_is_refused_not_echoed(api) -> None:
    client, _state = api
    c, _ = await signed_in(client)
    cookie = {"cookie": "; ".join(f"{k}={v}" for k, v in c.cookies.items())}
    app = client._transport.app  # type: ignore[attr-defined]
    async with AsgiWebSocket(app, "/api/ws/chat", cookie) as ws:
        for message in (
            {"request_id": "r" * 1_000_000, "chat_get": {"page_number": 0}},
            {"request_id": "ok", "cancel": {"request_id": "r" * 100_000}},
        ):
            await ws.send(message)
            reply = await ws.receive()
            assert reply["status"] == 422 and len(json.dumps(reply)) < 2_000, str(reply)[:300]
        await ws.send({"request_id": "x" * 256, "chat_get": {"page_number": 0}})
        reply = await ws.receive()
        assert reply["request_id"] == "x" * 256 and "chat_get_response" in reply, str(reply)[:300]
