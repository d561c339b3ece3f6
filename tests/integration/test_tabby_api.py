"""Tabby's HTTP API (/v1) on the platform's pipeline, on real PostgreSQL and Redis (scripted models)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from app.infra.encryption import opened
from app.services import tabby
from db.tables import Context, ContextualTelemetry, Generation, MetaQuery, PluginVersion
from tests.utils.api_tokens import bearer, user_with_token
from tests.utils.asgi_api import fresh_client, model_id, settle

GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
AGENT = "tabby-agent/1.5.0 (test)"


def tabby_request(
    prefix: str = "def read(path):\n    with open(path) as f:\n        return f.", **segments: Any
) -> dict:
    """A completion request as tabby-agent sends it."""
    return {
        "language": "python",
        "segments": {"prefix": prefix, "suffix": "\n", "filepath": "src/io.py", **segments},
    }


async def test_a_completion_is_a_stored_query_with_its_generation(api) -> None:
    client, state = api
    _, token, _ = await user_with_token(client)
    agent = fresh_client(client)
    r = await agent.post(
        "/v1/completions", json=tabby_request(), headers=bearer(token, **{"user-agent": AGENT})
    )
    assert r.status_code == 200, r.text
    assert "models;dur=" in r.headers["server-timing"]  # the pipeline's stages, as on the plugin's route
    answer = r.json()
    assert set(answer) == {"id", "choices"} and answer["id"].startswith("cmpl-")
    assert answer["choices"] == [{"index": 0, "text": "read()"}]
    meta_query_id = uuid.UUID(answer["id"][5:])
    await settle(state)
    async with state.sessionmaker() as db:
        meta = await db.get(MetaQuery, meta_query_id)
        assert meta is not None and meta.query_type == "completion"
        assert meta.session_id is None and meta.project_id is None  # an API token's call
        generation = await db.get(Generation, (meta_query_id, model_id(state, "scripted")))
        assert generation is not None and opened(generation, state.keyring)["completion"] == "read()"
        contextual = await db.get(ContextualTelemetry, meta.contextual_telemetry_id)
        assert contextual is not None and contextual.language_id == 47  # Python
        version = await db.get(PluginVersion, contextual.version_id)
        assert version is not None and (version.version_name, version.ide_type) == (
            "tabby-agent/1.5.0",
            "Tabby",
        )
        context = await db.get(Context, meta.context_id)
        assert context is not None and context.file_name == "src/io.py"
        assert (opened(context, state.keyring)["prefix"] or "").endswith("f.")


async def test_client_snippets_become_the_prompts_context_redacted_and_within_budget(api) -> None:
    client, state = api
    _, token, _ = await user_with_token(client)
    budget = state.settings.context_snippet_budget_chars
    declarations = [
        {"filepath": "src/util.py", "body": f"TOKEN = '{GITHUB_TOKEN}'\ndef helper():\n    pass"},
        {"filepath": "src/util.py", "body": f"TOKEN = '{GITHUB_TOKEN}'\ndef helper():\n    pass"},  # again
    ]
    changed = [
        {"filepath": "src/low.py", "body": "def low():\n    return 1", "score": 0.1},
        {"filepath": "src/high.py", "body": "def high():\n    return 2", "score": 0.9},
        {"filepath": "src/huge.py", "body": "x = 1\n" * (budget // 4), "score": 0.5},
    ]
    body = tabby_request(
        prefix=f"key = '{GITHUB_TOKEN}'\nprint(",
        declarations=declarations,
        relevant_snippets_from_changed_files=changed,
        relevant_snippets_from_recently_opened_files=[
            {"filepath": "README.md", "body": "# hi", "score": 1.0}
        ],
    )
    r = await fresh_client(client).post("/v1/completions", json=body, headers=bearer(token))
    assert r.status_code == 200, r.text
    _, call = state.gateway.calls[-1]
    assert GITHUB_TOKEN not in call.prefix
    paths = [s.path for s in call.context_snippets]
    # Declarations first (once), then changed files by score; the cut one last; within the budget.
    assert paths[:3] == ["src/util.py", "src/high.py", "src/huge.py"]
    assert all(GITHUB_TOKEN not in s.text for s in call.context_snippets)
    assert sum(len(s.text) for s in call.context_snippets) <= budget
    # Debug options: the snippets used; retrieval off: none.
    debug = {**body, "debug_options": {"return_snippets": True}}
    r = await fresh_client(client).post("/v1/completions", json=debug, headers=bearer(token))
    assert [s["filepath"] for s in r.json()["debug_data"]["snippets"]][:2] == ["src/util.py", "src/high.py"]
    off = {**body, "debug_options": {"disable_retrieval_augmented_code_completion": True}}
    r = await fresh_client(client).post("/v1/completions", json=off, headers=bearer(token))
    assert r.status_code == 200 and state.gateway.calls[-1][1].context_snippets == ()


async def test_storage_preferences_apply_as_for_the_plugin(api) -> None:
    client, state = api
    _, token, _ = await user_with_token(client, preference={"store_context": False})
    r = await fresh_client(client).post("/v1/completions", json=tabby_request(), headers=bearer(token))
    assert r.status_code == 200, r.text
    await settle(state)
    async with state.sessionmaker() as db:
        meta = await db.get(MetaQuery, uuid.UUID(r.json()["id"][5:]))
    assert meta is not None and meta.context_id is None and meta.contextual_telemetry_id is not None


async def test_view_select_and_dismiss_become_shown_accepted_and_rejected(api) -> None:
    client, state = api
    _, token, _ = await user_with_token(client)
    agent = fresh_client(client)
    ids = []
    for _ in range(2):
        r = await agent.post("/v1/completions", json=tabby_request(), headers=bearer(token))
        ids.append(r.json()["id"])
    events = [
        {"type": "view", "completion_id": ids[0], "choice_index": 0, "view_id": "v1"},
        {"type": "select", "completion_id": ids[0], "choice_index": 0, "view_id": "v1", "elapsed": 800},
        {"type": "view", "completion_id": ids[1], "choice_index": 0},
        {"type": "dismiss", "completion_id": ids[1], "choice_index": 0, "elapsed": 300},
    ]
    for event in events:
        r = await agent.post(
            "/v1/events?select_kind=line" if event["type"] == "select" else "/v1/events",
            json=event,
            headers=bearer(token),
        )
        assert r.status_code == 200, r.text
    await settle(state)
    scripted = model_id(state, "scripted")
    async with state.sessionmaker() as db:
        accepted = await db.get(Generation, (uuid.UUID(ids[0][5:]), scripted))
        dismissed = await db.get(Generation, (uuid.UUID(ids[1][5:]), scripted))
    assert accepted is not None and accepted.was_accepted and len(accepted.shown_at) == 1
    assert dismissed is not None and not dismissed.was_accepted and len(dismissed.shown_at) == 1
    # Once stored (the Redis copy gone), events still find the query in PostgreSQL.
    from app.services.completions import RECENT

    await RECENT.forget(state.redis, uuid.UUID(ids[1][5:]))
    again = {"type": "select", "completion_id": ids[1], "choice_index": 0}
    assert (await agent.post("/v1/events", json=again, headers=bearer(token))).status_code == 200


@pytest.mark.parametrize(
    ("event", "status"),
    [
        ({"type": "click", "choice_index": 0}, 422),
        ({"type": "view", "choice_index": -1}, 422),
        ({"type": "view", "choice_index": 3}, 404),
        ({"type": "view", "choice_index": 0, "completion_id": "agent-123"}, 404),
        ({"type": "view", "choice_index": 0, "completion_id": f"cmpl-{uuid.uuid4()}"}, 404),
        ({"type": "view", "choice_index": 0, "completion_id": "cmpl-" + "g" * 36}, 404),
        ({"type": "view", "choice_index": 0, "elapsed": -5}, 422),
        ({"choice_index": 0}, 422),
    ],
)
async def test_bad_events_are_4xx(api, event: dict, status: int) -> None:
    client, _ = api
    _, token, _ = await user_with_token(client)
    agent = fresh_client(client)
    r = await agent.post("/v1/completions", json=tabby_request(), headers=bearer(token))
    body = {"completion_id": r.json()["id"], **event}
    r = await agent.post("/v1/events", json=body, headers=bearer(token))
    assert r.status_code == status, r.text
    assert "message" in r.json()


async def test_another_users_completion_is_forbidden(api) -> None:
    client, _ = api
    _, alice, _ = await user_with_token(client)
    _, bob, _ = await user_with_token(client)
    agent = fresh_client(client)
    r = await agent.post("/v1/completions", json=tabby_request(), headers=bearer(alice))
    event = {"type": "select", "completion_id": r.json()["id"], "choice_index": 0}
    assert (await agent.post("/v1/events", json=event, headers=bearer(bob))).status_code == 403
    bad_kind = await agent.post("/v1/events?select_kind=block", json=event, headers=bearer(alice))
    assert bad_kind.status_code == 422


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"language": "python"}, 422),  # no segments
        ({"segments": {"suffix": "x"}}, 422),  # no prefix
        ({**tabby_request(), "debug_options": {"raw_prompt": "def f("}}, 422),
        ({**tabby_request(), "mode": "next_edit_suggestion"}, 422),
        ({**tabby_request(), "temperature": 5}, 422),
        ({**tabby_request(), "seed": -1}, 422),
        ({**tabby_request(), "language": "x" * 101}, 422),
        (tabby_request(prefix="x" * 10_001), 413),
        (tabby_request(clipboard="x" * 10_001), 413),
        (tabby_request(declarations=[{"filepath": "a.py", "body": "x"}] * 65), 422),
        (tabby_request(declarations=[{"filepath": "a.py"}]), 422),
        (tabby_request(prefix="a\x00b"), 422),
        ([1, 2], 422),
    ],
)
async def test_bad_completion_requests_are_4xx(api, body: Any, status: int) -> None:
    client, _ = api
    _, token, _ = await user_with_token(client)
    r = await fresh_client(client).post("/v1/completions", json=body, headers=bearer(token))
    assert r.status_code == status, r.text
    assert "message" in r.json()


async def test_languages_map_to_our_ids_and_unknown_ones_to_unknown(api) -> None:
    _, state = api
    assert tabby.language_id("typescriptreact") == 64 and tabby.language_id("Python") == 47
    assert tabby.language_id("brainfuck") == tabby.language_id(None) == 179
    assert all(i in state.reference.languages for i in tabby.LANGUAGE_IDS.values())


async def test_health_names_the_models_and_the_version(api) -> None:
    client, _ = api
    _, token, _ = await user_with_token(client)
    r = await fresh_client(client).get("/v1/health", headers=bearer(token))
    health = r.json()
    assert health["model"] == "scripted" and health["chat_model"] == "chatty"
    assert health["device"] == "cpu" and health["version"]["git_describe"].startswith("code4me-serve")
    async with api[1].sessionmaker() as db:
        rows = (
            (await db.execute(select(PluginVersion).where(PluginVersion.ide_type == "Tabby"))).scalars().all()
        )  # type: ignore[arg-type]
    assert all(len(r.version_name) <= 100 for r in rows)


async def test_health_answers_post_too_as_tabby_does(api) -> None:
    client, _ = api
    _, token, _ = await user_with_token(client)
    r = await fresh_client(client).post("/v1/health", headers=bearer(token))
    assert r.status_code == 200 and r.json()["model"] == "scripted"
    assert (await fresh_client(client).post("/v1/health")).status_code == 401
