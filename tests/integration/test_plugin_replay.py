"""The plugin's whole session over HTTP with one cookie jar, as the JetBrains plugin makes it (scripted models)."""

from __future__ import annotations

import uuid

import pytest
from pyhocon import ConfigFactory
from sqlalchemy import select

from db.tables import ChatMessage, Generation, GroundTruth, Session
from tests.utils import payloads as P
from tests.utils.asgi_api import fresh_client, settle
from tests.utils.google_tokens import GoogleKeys


def change(kind: str, start: int, end: int, lines: list[str]) -> dict:
    return {"change_type": kind, "start_line": start, "end_line": end, "new_lines": lines}


@pytest.mark.parametrize("provider", ["password", "google"])
async def test_plugin_session_replayed_over_http(google_api, keys: GoogleKeys, provider: str) -> None:
    client, state = google_api
    jar = fresh_client(client)  # one cookie jar for the whole session, as the plugin keeps it
    email = P.new_email()
    if provider == "password":
        r = await jar.post("/api/user/create", json=P.user_create(email))
        assert r.status_code == 201, r.text
        r = await jar.post("/api/user/authenticate", json=P.authenticate(email))
    else:
        r = await jar.post("/api/user/authenticate", json={"email": email, "password": "", "provider": "google", "token": keys.token(email)})
    assert r.status_code == 200, r.text
    user_id = uuid.UUID(r.json()["user"]["user_id"])
    config = ConfigFactory.parse_string(r.json()["config"])
    models = {m["name"]: int(m["id"]) for m in config.get("config.models.available")}
    scripted, chatty = models["scripted"], models["chatty"]

    r = await jar.put("/api/user/update", json={"preference": {"store_context": True, "store_behavioral_telemetry": False}})
    assert r.status_code == 200, r.text
    assert r.json()["user"]["preference"]["store_context"] is True

    r = await jar.get("/api/session/acquire")
    assert r.status_code == 200
    session_token = r.json()["session_token"]
    r = await jar.get("/api/session/acquire/")  # the plugin calls it again: the live session is reused
    assert r.json()["session_token"] == session_token
    r = await jar.post("/api/project/create", json={"project_name": "replay"})
    assert r.status_code == 201, r.text
    project_id = r.json()["project_id"]
    r = await jar.put("/api/project/activate", json={"project_id": project_id})
    assert r.status_code == 200, r.text

    helper = ["import json", "", "def load_settings(path):", "    with open(path) as f:", "        return json.load(f)"]
    r = await jar.post("/api/completion/multi-file-context/update", json={"context_updates": {"src/settings.py": [change("insert", 0, 0, helper)]}})
    assert r.status_code == 200 and r.json()["data"]["src/settings.py"] == helper
    r = await jar.post(
        "/api/completion/multi-file-context/update",
        json={"context_updates": {"src/settings.py": [change("update", 2, 3, ["def load_settings(path, strict=True):"]), change("remove", 1, 2, [])]}},
    )
    assert r.status_code == 200
    assert r.json()["data"]["src/settings.py"][1] == "def load_settings(path, strict=True):"

    body = P.completion_request([scripted], prefix="from settings import load_settings\n\nconfig = load_settings(", suffix=")\n")
    body["context"]["context_files"] = ["*"]
    r = await jar.post("/api/completion/request", json=body)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    qid = data["meta_query_id"]
    assert data["completions"][0]["completion"] == "read()"
    sent = [req for name, req in state.gateway.calls if name == "scripted"][-1]  # type: ignore[attr-defined]
    assert [s["path"] for s in sent["context_snippets"]] == ["src/settings.py"]
    for truth in ("read()", "read())\n", "read())\nprint(config)"):  # at 15, 45 and 90 s in the plugin
        r = await jar.post("/api/completion/feedback", json={"meta_query_id": qid, "model_id": scripted, "was_accepted": True, "ground_truth": truth})
        assert r.status_code == 200, r.text

    chat_id = str(uuid.uuid4())
    r = await jar.post("/api/chat/request", json={"model_ids": [chatty], "chat_id": chat_id, "messages": [["user", "What does load_settings do?"]], "context": body["context"]})
    assert r.status_code == 200, r.text
    await settle(state)
    r = await jar.get("/api/chat/get/0")
    assert [i["chat_id"] for i in r.json()["items"]] == [chat_id]
    assert r.json()["items"][0]["history"][0]["user_message"]["content"] == "What does load_settings do?"

    r = await jar.put("/api/session/deactivate")
    assert r.status_code == 200, r.text
    assert (await jar.post("/api/completion/request", json=body)).status_code == 401

    await settle(state)
    async with state.sessionmaker() as db:
        gen = await db.get(Generation, (uuid.UUID(qid), scripted))
        assert gen is not None and gen.was_accepted
        truths = (await db.execute(select(GroundTruth.ground_truth).where(GroundTruth.meta_query_id == uuid.UUID(qid)))).scalars().all()
        assert sorted(truths) == sorted(["read()", "read())\n", "read())\nprint(config)"])
        messages = (await db.execute(select(ChatMessage.role).where(ChatMessage.chat_id == uuid.UUID(chat_id)))).scalars().all()
        assert sorted(messages) == ["assistant", "user"]
        (session,) = (await db.execute(select(Session).where(Session.user_id == user_id))).scalars().all()
        assert session.end_time is not None
