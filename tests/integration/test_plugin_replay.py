"""The Code4me V2 JetBrains plugin's own call sequence, replayed with its cookie handling and parser rules.

The app runs in process on the real PostgreSQL and Redis with the model registry of `configs/local.yaml`
(pinned ids 1 and 3, the ids the plugin's bundled plugin.conf sends) and scripted models;
tests/integration/test_end_to_end.py replays the same client against real Ray Serve and the real models.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pyhocon import ConfigFactory
from sqlalchemy import select

from app.infra.encryption import opened
from app.infra.state import AppState
from db.seed_data import PROGRAMMING_LANGUAGES
from db.tables import ChatMessage, Generation, GroundTruth, Session
from serve.embedded import ServiceUrls
from tests.utils import payloads as P
from tests.utils.asgi_api import ENTRIES, api_settings, running_api, settle, shipped_entries
from tests.utils.outbox import mails_to
from tests.utils.plugin_client import (
    CHAT_MODEL_ID,
    COMPLETION_MODEL_ID,
    PluginIDE,
    chat_body,
    completion_body,
)

# The shipped registry, and one chat model that always fails (scripted), to see a failed slot parse.
ENTRY_NAMES = {"broken-chatty"}


def plugin_entries() -> list[dict]:
    """configs/local.yaml's models plus the scripted failing chat model."""
    return shipped_entries("local.yaml") + [e for e in ENTRIES if e["name"] in ENTRY_NAMES]


@pytest.fixture(scope="module")
async def plugin_api(services: ServiceUrls, data_dir: Path) -> AsyncIterator[tuple[object, AppState]]:
    async with running_api(
        services.database_url, services.redis_url, api_settings(data_dir), plugin_entries()
    ) as (client, state):
        yield client, state


def change(kind: str, start: int, end: int, lines: list[str]) -> dict:
    return {"change_type": kind, "start_line": start, "end_line": end, "new_lines": lines}


UTIL = [
    "import json",
    "",
    "def load_settings(path):",
    "    with open(path) as f:",
    "        return json.load(f)",
]


async def test_the_plugins_whole_session_replayed(plugin_api, data_dir: Path) -> None:
    client, state = plugin_api
    ide = PluginIDE(client._transport, "http://test")  # type: ignore[attr-defined]
    email = P.new_email()
    r = await ide.sign_up(email, P.STRONG_PASSWORD)

    # The config string parses as HOCON, lists the pinned models and keeps every seeded language name.
    config = ConfigFactory.parse_string(r.json()["config"])
    models = {int(m["id"]): m for m in config.get("config.models.available")}
    assert (
        models[COMPLETION_MODEL_ID]["isChatModel"] is False
        and models[COMPLETION_MODEL_ID]["isDefault"] is True
    )
    assert models[CHAT_MODEL_ID]["isChatModel"] is True and models[CHAT_MODEL_ID]["isDefault"] is True
    for language_id, name in PROGRAMMING_LANGUAGES:  # a quoted HOCON path names one key, however odd
        assert config.get_int(f'config.languages."{name}"') == language_id, name
    assert len(config.get("config.languages")) == len(PROGRAMMING_LANGUAGES)

    preference = {
        "store_context": True,
        "store_contextual_telemetry": True,
        "store_behavioral_telemetry": True,
        "enabled_modules": ["GroundTruth", "AcceptanceFeedback"],
        "module_values": {"checkingIntervals": "15, 45, 90"},
    }
    r = await ide.call("PUT", "/api/user/update", "UpdateUserPutResponse", json={"preference": preference})
    assert r.status_code == 200 and r.json()["user"]["preference"]["enabled_modules"] == [
        "GroundTruth",
        "AcceptanceFeedback",
    ]

    # Two IDE projects open: each starts (user/get, acquire, activateOrCreateProject with UUID.fromString).
    await ide.start_project("alpha")
    await ide.start_project("beta")
    assert all(uuid.UUID(token) for token in ide.stored_projects.values())
    session_token = ide.store["session_token"][0]

    # Multi-file context: a file first seen (one insert, its inclusive end), then diffs (half-open ranges).
    r = await ide.context_update("alpha", {"src/util.py": [change("insert", 0, len(UTIL) - 1, UTIL)]})
    assert r.status_code == 200 and r.json()["data"]["src/util.py"] == UTIL
    r = await ide.context_update(
        "alpha",
        {
            "src/util.py": [
                change("update", 2, 3, ["def load_settings(path, strict=True):"]),
                change("remove", 1, 2, []),
            ]
        },
    )
    assert (
        r.status_code == 200 and r.json()["data"]["src/util.py"][1] == "def load_settings(path, strict=True):"
    )

    # Inline completion through the provider's logic: the plugin.conf default id, no stop_sequences.
    body = completion_body(
        COMPLETION_MODEL_ID, "from util import load_settings\n\nconfig = load_settings(", ")\n"
    )
    assert "stop_sequences" not in body
    r = await ide.inline_completion("alpha", body)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    qid, (slot,) = data["meta_query_id"], data["completions"]
    assert slot["model_id"] == COMPLETION_MODEL_ID and slot["completion"] == "read()"
    sent = [req for name, req in state.gateway.calls if name == "code4me-tiny"][-1]  # type: ignore[attr-defined]
    assert [s.path for s in sent.context_snippets] == ["src/util.py"]
    # Acceptance, then the ground truths at 15, 45 and 90 s.
    r = await ide.feedback(
        "alpha", {"meta_query_id": qid, "model_id": COMPLETION_MODEL_ID, "was_accepted": True}
    )
    assert r.status_code == 200, r.text
    truths = ["read()", "read())\n", "read())\nprint(config)"]
    for truth in truths:
        r = await ide.feedback(
            "alpha",
            {
                "meta_query_id": qid,
                "model_id": COMPLETION_MODEL_ID,
                "was_accepted": True,
                "ground_truth": truth,
            },
        )
        assert r.status_code == 200, r.text

    # Chat: activation first, the whole conversation with the window's placeholder last; a failed model too.
    chat_id = str(uuid.uuid4())
    broken = state.model_by_name("broken-chatty").model_id  # type: ignore[union-attr]
    r = await ide.chat(
        "alpha", chat_body([CHAT_MODEL_ID, broken], chat_id, [("user", "What does load_settings do?")])
    )
    assert r.status_code == 200, r.text
    turn = r.json()["history"][0]  # the plugin shows history[0]'s answers
    assert turn["user_message"]["content"] == "What does load_settings do?"
    ok, failed = turn["assistant_responses"]
    assert ok["model_id"] == CHAT_MODEL_ID and ok["completion"].startswith("You asked: ")
    assert failed["model_id"] == broken and failed["completion"] == "" and "message" in failed
    r = await ide.chat(
        "alpha",
        chat_body(
            [CHAT_MODEL_ID],
            chat_id,
            [
                ("user", "What does load_settings do?"),
                ("assistant", ok["completion"]),
                ("user", "And strict?"),
            ],
        ),
    )
    assert r.status_code == 200 and r.json()["history"][0]["user_message"]["content"] == "And strict?"
    for _ in range(10):  # eleven chats in all: pages 0 and 1 of ten
        r = await ide.chat("alpha", chat_body([CHAT_MODEL_ID], str(uuid.uuid4()), [("user", "more")]))
        assert r.status_code == 200, r.text
    await settle(state)
    r0, r1 = await ide.chat_page("alpha", 0), await ide.chat_page("alpha", 1)
    assert r0.status_code == 200 and r1.status_code == 200
    page0, page1 = [i["chat_id"] for i in r0.json()["items"]], [i["chat_id"] for i in r1.json()["items"]]
    assert len(page0) == 10 and len(page1) == 1 and not set(page0) & set(page1)
    assert page1 == [chat_id]  # the oldest chat, with both turns and the failed slot kept
    (old_chat,) = r1.json()["items"]
    assert [t["user_message"]["content"] for t in old_chat["history"]] == [
        "What does load_settings do?",
        "And strict?",
    ]
    # Deleting a chat the server never stored (the plugin keeps chats locally too) is not an error.
    r = await ide.delete_chat("alpha", str(uuid.uuid4()))
    assert r.status_code == 200, r.text

    # Password reset from the plugin: no body, the address in the query string.
    r = await ide.call(
        "POST", f"/api/user/reset-password/request?email={email}", "PasswordResetRequestPostResponse"
    )
    assert r.status_code == 200, r.text
    assert [m["Subject"] for m in mails_to(data_dir / "outbox", email) if "password" in m["Subject"]] == [
        "Reset your Code4me password"
    ]

    # The 5-minute sweep's notice for a deleted file of beta (the last activated project: its cookie).
    r = await ide.context_update(
        "beta", {"src/gone.py": [change("insert", 0, 2, ["a = 1", "b = 2", "c = 3"])]}
    )
    assert r.status_code == 200
    r = await ide.context_update(None, {"src/gone.py": [change("remove", 0, 2, [])]})
    assert r.status_code == 200 and r.json()["data"]["src/gone.py"] == []

    # Closing beta deactivates "the session", which alpha still uses: alpha keeps completing.
    r = await ide.close_project("beta")
    assert r.status_code == 200, r.text
    assert ide.store["session_token"][0] == session_token
    r = await ide.inline_completion("alpha", body)
    assert r.status_code == 200, r.text

    # The IDE restarts: cookies are gone, the auth token and the project tokens (UUIDs) are on disk.
    await ide.aclose()
    ide = ide.restarted()
    before = dict(ide.stored_projects)
    await ide.start_project("alpha")
    assert ide.stored_projects == before  # activated the stored token, no new project
    r = await ide.inline_completion("alpha", body)
    assert r.status_code == 200, r.text
    assert all(status != 401 for _m, _p, status in ide.statuses)
    await ide.aclose()

    await settle(state)
    user_id = uuid.UUID(
        (await client.get("/api/user/get", cookies={"auth_token": ide.stored_auth})).json()["user"]["user_id"]
    )  # type: ignore[attr-defined]
    async with state.sessionmaker() as db:
        gen = await db.get(Generation, (uuid.UUID(qid), COMPLETION_MODEL_ID))
        assert gen is not None and gen.was_accepted
        stored = [
            opened(t, state.keyring)["ground_truth"]
            for t in (
                await db.execute(select(GroundTruth).where(GroundTruth.meta_query_id == uuid.UUID(qid)))
            ).scalars()
        ]
        assert sorted(stored) == sorted(truths)
        roles = (
            (await db.execute(select(ChatMessage.role).where(ChatMessage.chat_id == uuid.UUID(chat_id))))
            .scalars()
            .all()
        )
        assert sorted(roles) == ["assistant", "assistant", "user", "user"]
        sessions = (await db.execute(select(Session).where(Session.user_id == user_id))).scalars().all()
        assert [s.end_time for s in sessions] == [None]  # one session, still open: alpha never closed


async def test_signing_out_ends_the_session(plugin_api) -> None:
    client, _state = plugin_api
    ide = PluginIDE(client._transport, "http://test")  # type: ignore[attr-defined]
    await ide.sign_up(P.new_email(), P.STRONG_PASSWORD)
    await ide.start_project("alpha")
    await ide.start_project("beta")
    # UserConfigurationSection's sign-out: the stored auth token is forgotten first, then deactivate.
    ide.stored_auth = None
    ide.store.pop("auth_token", None)
    r = await ide.call("PUT", "/api/session/deactivate/", "DeactivateSessionPostResponse")
    assert r.status_code == 200 and r.json()["message"] == "Session deactivated successfully"
    assert "session_token" not in ide.store
    await ide.aclose()


@pytest.fixture(scope="module")
async def short_lived_api(services: ServiceUrls, data_dir: Path) -> AsyncIterator[tuple[object, AppState]]:
    settings = api_settings(data_dir, auth_token_ttl_s=5, session_token_ttl_s=5, token_max_age_s=3600)
    async with running_api(services.database_url, services.redis_url, settings, plugin_entries()) as (
        client,
        state,
    ):
        yield client, state


async def test_five_second_tokens_never_expire_under_a_working_plugin(short_lived_api) -> None:
    client, _state = short_lived_api
    ide = PluginIDE(client._transport, "http://test")  # type: ignore[attr-defined]
    await ide.sign_up(P.new_email(), P.STRONG_PASSWORD)
    await ide.start_project("alpha")
    await ide.start_project("beta")  # opened, then left idle for the whole run
    body = completion_body(COMPLETION_MODEL_ID, "def main():\n    print(")
    chat_id = str(uuid.uuid4())
    started = time.monotonic()
    rounds = 0
    while time.monotonic() - started < 20.0:  # four token lifetimes of work, a request every ~1.5 s
        step = rounds % 3
        if step == 0:
            r = await ide.inline_completion("alpha", body)
        elif step == 1:
            r = await ide.context_update(
                "alpha", {"src/util.py": [change("insert", 0, 0, [f"x = {rounds}"])]}
            )
        else:
            r = await ide.chat("alpha", chat_body([CHAT_MODEL_ID], chat_id, [("user", f"round {rounds}")]))
        assert r.status_code == 200, f"{time.monotonic() - started:.1f} s: {r.status_code}"
        rounds += 1
        await asyncio.sleep(1.5)
    # The idle project's activation lives with the session, so beta still works after 20 s.
    r = await ide.inline_completion("beta", body)
    assert r.status_code == 200, r.text
    assert rounds >= 10 and all(status != 401 for _m, _p, status in ide.statuses)

    # Sliding, not endless: once the plugin stops working for longer than the lifetime, the tokens are gone.
    await asyncio.sleep(6.5)
    r = await ide.inline_completion("alpha", body)
    assert r.status_code == 401
    await ide.aclose()


async def test_no_token_outlives_its_maximum_age(services: ServiceUrls, data_dir: Path) -> None:
    settings = api_settings(data_dir, auth_token_ttl_s=5, session_token_ttl_s=5, token_max_age_s=6)
    async with running_api(services.database_url, services.redis_url, settings, plugin_entries()) as (
        client,
        _state,
    ):
        ide = PluginIDE(client._transport, "http://test")  # type: ignore[attr-defined]
        await ide.sign_up(P.new_email(), P.STRONG_PASSWORD)
        issued = time.monotonic()  # the auth token, the first to reach its cap, was issued just before
        await ide.start_project("alpha")
        tokens = {
            "auth_token": ide.stored_auth,
            "session_token": ide.store["session_token"][0],
            "project_token": ide.stored_projects["alpha"],
        }
        body = completion_body(COMPLETION_MODEL_ID, "x = ")
        codes = []  # (seconds since the auth token was issued, status)
        while time.monotonic() - issued < 9.0:
            codes.append(
                (time.monotonic() - issued, (await ide.inline_completion("alpha", body)).status_code)
            )
            await asyncio.sleep(0.5)
        assert all(code == 200 for t, code in codes if t < 5.0), codes
        assert all(code == 401 for t, code in codes if t > 6.5), codes
        # The server refuses the tokens themselves (not only the client's expired cookies).
        cookie = "; ".join(f"{k}={v}" for k, v in tokens.items())
        r = await client.post("/api/completion/request", json=body, headers={"Cookie": cookie})  # type: ignore[attr-defined]
        assert r.status_code == 401
        await ide.aclose()
