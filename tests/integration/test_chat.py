"""Chat over REST on real PostgreSQL and Redis (scripted chat models): answers, history, ownership, deletion."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from app import protocol
from app.infra.state import AppState
from db.tables import Chat, ChatMessage, Context, MetaQuery
from tests.utils.asgi_api import model_id, settle, signed_in


def chat_body(
    state: AppState,
    chat_id: uuid.UUID,
    messages: list[list[str]],
    models: tuple[str, ...] = ("chatty",),
    **extra: Any,
) -> dict[str, Any]:
    """POST /api/chat/request as the plugin sends it."""
    return {
        "model_ids": [model_id(state, m) for m in models],
        "chat_id": str(chat_id),
        "messages": messages,
        "context": {
            "prefix": "def add(a, b):\n    ",
            "suffix": "\n",
            "file_name": "calc.py",
            "selected_text": "",
            "context_files": [],
        },
        "contextual_telemetry": {"version_id": 1, "trigger_type_id": 1, "language_id": 1},
        "behavioral_telemetry": {},
        "web_enabled": False,
        **extra,
    }


async def rows(state: AppState, table: Any, **where: Any) -> int:
    async with state.sessionmaker() as db:
        q = select(func.count()).select_from(table)
        for k, v in where.items():
            q = q.where(getattr(table, k) == v)
        return int((await db.execute(q)).scalar_one())


async def test_chat_answers_side_by_side_and_history_keeps_real_messages(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    chat_id = uuid.uuid4()
    first = "  How do I add two numbers?\nIn Python please"
    r = await c.post(
        "/api/chat/request",
        json=chat_body(state, chat_id, [["user", first]], models=("chatty", "broken-chatty")),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["chat_id"] == str(chat_id) and body["title"] == "How do I add two numbers?"
    (turn,) = body["history"]
    assert turn["user_message"]["role"] == "user" and turn["user_message"]["content"] == first
    ok, failed = turn["assistant_responses"]
    assert ok["model_name"] == "chatty" and ok["completion"] == "You asked: " + first[:40]
    # A failure carries every field the plugin's parser requires, empty.
    assert failed == {
        "model_id": model_id(state, "broken-chatty"),
        "model_name": "broken-chatty",
        "completion": "",
        "generation_time": failed["generation_time"],
        "confidence": 0.0,
        "was_accepted": False,
        "message": "Chat completion for model failed",
    }
    assert isinstance(failed["generation_time"], int) and failed["generation_time"] >= 0
    # The model saw the code around the cursor as a system message before the conversation.
    seen = [call for name, call in state.gateway.calls if name == "chatty"][-1].messages  # type: ignore[attr-defined]
    assert (
        seen[0].role == "system"
        and "calc.py" in seen[0].content
        and seen[-1] == protocol.ChatMessage("user", first)
    )

    r = await c.post(
        "/api/chat/request",
        json=chat_body(
            state, chat_id, [["user", first], ["assistant", ok["completion"]], ["user", "And three?"]]
        ),
    )
    assert r.status_code == 200 and r.json()["title"] == "How do I add two numbers?"
    await settle(state)
    r = await c.get("/api/chat/get/0")  # pages count from 0, as in the plugin
    assert r.status_code == 200, r.text
    listing = r.json()
    assert listing["page"] == 0 and listing["per_page"] == 10
    (chat,) = listing["items"]
    assert chat["chat_id"] == str(chat_id)
    assert [t["user_message"]["content"] for t in chat["history"]] == [first, "And three?"]
    assert chat["history"][1]["assistant_responses"][0]["completion"] == "You asked: And three?"
    # The stored failure keeps the required fields too.
    assert (
        chat["history"][0]["assistant_responses"][1]["completion"] == ""
        and chat["history"][0]["assistant_responses"][1]["was_accepted"] is False
    )
    r = await c.get("/api/chat/get/1")
    assert r.status_code == 200 and r.json()["page"] == 1 and r.json()["items"] == []
    assert await rows(state, ChatMessage, chat_id=chat_id) == 4  # two user turns, two chatty answers


async def test_chats_are_private_and_deletion_is_complete(api) -> None:
    client, state = api
    alice, _ = await signed_in(client)
    bob, _ = await signed_in(client)
    chat_id = uuid.uuid4()
    r = await alice.post("/api/chat/request", json=chat_body(state, chat_id, [["user", "secret plans"]]))
    assert r.status_code == 200
    assert (
        await bob.post("/api/chat/request", json=chat_body(state, chat_id, [["user", "let me in"]]))
    ).status_code == 403
    assert (await bob.delete(f"/api/chat/delete/{chat_id}")).status_code == 403
    await settle(state)
    r = await bob.get("/api/chat/get/0")
    assert all(i["chat_id"] != str(chat_id) for i in r.json()["items"])
    contexts_before = await rows(state, Context)
    r = await alice.delete(f"/api/chat/delete/{chat_id}")
    assert r.status_code == 200 and r.json()["chat_id"] == str(chat_id)
    assert (
        await rows(state, Chat, chat_id=chat_id) == 0 and await rows(state, ChatMessage, chat_id=chat_id) == 0
    )
    assert await rows(state, Context) == contexts_before - 1
    # Deleting is idempotent for the owner (the plugin rethrows a 404 in its UI): again, or a chat never stored.
    r = await alice.delete(f"/api/chat/delete/{chat_id}")
    assert r.status_code == 200 and r.json()["message"] == "Chat already deleted"
    r = await alice.delete(f"/api/chat/delete/{uuid.uuid4()}")
    assert r.status_code == 200 and r.json()["message"] == "Chat already deleted"
    assert (
        await alice.post("/api/chat/request", json=chat_body(state, chat_id, [["user", "again"]]))
    ).status_code == 404


async def test_chat_deleted_before_it_was_written_stays_deleted(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    chat_id = uuid.uuid4()
    await settle(state)
    meta_before = await rows(state, MetaQuery)
    r = await c.post("/api/chat/request", json=chat_body(state, chat_id, [["user", "quick"]]))
    assert r.status_code == 200
    r = await c.delete(f"/api/chat/delete/{chat_id}")  # very likely before the writer got to it
    assert r.status_code == 200
    await settle(state)
    assert (
        await rows(state, Chat, chat_id=chat_id) == 0 and await rows(state, ChatMessage, chat_id=chat_id) == 0
    )
    assert await rows(state, MetaQuery) == meta_before


async def test_chat_without_context_consent_stores_no_text(api) -> None:
    client, state = api
    c, _ = await signed_in(client, preference={"store_context": False})
    chat_id = uuid.uuid4()
    r = await c.post("/api/chat/request", json=chat_body(state, chat_id, [["user", "my private code"]]))
    assert r.status_code == 200
    await settle(state)
    assert await rows(state, Chat, chat_id=chat_id) == 1
    assert await rows(state, ChatMessage, chat_id=chat_id) == 0


async def test_the_plugins_placeholder_after_the_user_turn_is_not_a_turn(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    turns = [
        ["system", "You are a helpful programming assistant."],
        ["user", "Sort a list?"],
        ["assistant", "Generating."],
    ]
    r = await c.post("/api/chat/request", json=chat_body(state, uuid.uuid4(), turns))
    assert r.status_code == 200, r.text
    (turn,) = r.json()["history"]
    assert turn["user_message"]["content"] == "Sort a list?"
    assert turn["assistant_responses"][0]["completion"] == "You asked: Sort a list?"
    seen = [call for name, call in state.gateway.calls if name == "chatty"][-1].messages  # type: ignore[attr-defined]
    assert seen[-1] == protocol.ChatMessage("user", "Sort a list?")
    assert all(m.content != "Generating." for m in seen)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda b, s: b.update(messages=[["assistant", "Generating."]]), "must end with a user message"),
        (
            lambda b, s: b.update(messages=[["user", "hi"], ["system", "be brief"]]),
            "must end with a user message",
        ),
        (lambda b, s: b.update(messages=[["robot", "hi"]]), "role"),
        (lambda b, s: b.update(messages=[]), "messages"),
        (lambda b, s: b.update(model_ids=[model_id(s, "scripted")]), "not a chat model"),
        (lambda b, s: b.update(model_ids=[987654]), "Unknown model"),
        (lambda b, s: b.update(chat_id="nope"), "chat_id"),
        (lambda b, s: b["contextual_telemetry"].update(language_id=987654), "language_id"),
    ],
)
async def test_bad_chat_requests_get_clear_errors_and_store_nothing(api, change, words) -> None:
    client, state = api
    c, _ = await signed_in(client)
    body = chat_body(state, uuid.uuid4(), [["user", "hi"]])
    change(body, state)
    await settle(state)
    before = await rows(state, Chat)
    r = await c.post("/api/chat/request", json=body)
    assert r.status_code == 422, r.text
    assert words in r.json()["message"]
    await settle(state)
    assert await rows(state, Chat) == before
