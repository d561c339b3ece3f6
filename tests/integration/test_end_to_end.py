"""End to end on real Ray Serve, PostgreSQL and Redis: the plugin's first calls, then the rows they left."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
from pyhocon import ConfigFactory
from redis.asyncio import Redis
from sqlalchemy import select

from app.infra.encryption import opened
from app.infra.envelope import Keyring
from app.telemetry.stream import wait_drained
from db.engine import make_engine, make_sessionmaker
from db.tables import (
    BehavioralTelemetry,
    CompletionQuery,
    Context,
    ContextualTelemetry,
    Generation,
    GroundTruth,
    MetaQuery,
    ModelName,
    Project,
    ProjectMember,
    Session,
)
from serve.embedded import ServiceUrls
from tests.integration.conftest import RAY_ENCRYPTION_KEYS, ray_app_redis_url
from tests.utils import payloads as P
from tests.utils.plugin_client import (
    CHAT_MODEL_ID,
    COMPLETION_MODEL_ID,
    PluginIDE,
    chat_body,
    completion_body,
)


async def _drained(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        await wait_drained(redis, timeout_s=60)
    finally:
        await redis.aclose()


async def _rows(database_url: str, qid: uuid.UUID) -> dict:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as db:
            meta = await db.get(MetaQuery, qid)
            assert meta is not None
            return {
                "meta": meta,
                "completion_query": await db.get(CompletionQuery, qid),
                "context": await db.get(Context, meta.context_id),
                "contextual": await db.get(ContextualTelemetry, meta.contextual_telemetry_id),
                "behavioral": await db.get(BehavioralTelemetry, meta.behavioral_telemetry_id),
                "generations": (await db.execute(select(Generation).where(Generation.meta_query_id == qid)))
                .scalars()
                .all(),
                "truths": (await db.execute(select(GroundTruth).where(GroundTruth.meta_query_id == qid)))
                .scalars()
                .all(),
                "session": await db.get(Session, meta.session_id),
                "project": await db.get(Project, meta.project_id),
                "member": await db.get(ProjectMember, (meta.project_id, meta.user_id)),
                "model": await db.get(
                    ModelName,
                    (
                        await db.execute(select(Generation.model_id).where(Generation.meta_query_id == qid))
                    ).scalar_one(),
                ),
            }
    finally:
        await engine.dispose()


def test_plugin_flow_end_to_end(serve_app: str, services: ServiceUrls) -> None:
    with httpx.Client(base_url=serve_app, timeout=60) as c:
        email = P.new_email()
        r = c.post("/api/user/create", json={**P.user_create(email), "preference": {"store_context": True}})
        assert r.status_code == 201, r.text
        r = c.post("/api/user/authenticate", json=P.authenticate(email))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"]["email"] == email and body["user"]["password"] == "**********"
        assert "auth_token" in c.cookies
        r = c.get("/api/session/acquire")
        assert r.status_code == 200 and r.json()["session_token"] == c.cookies["session_token"]
        r = c.post("/api/project/create", json={"project_name": "e2e"})
        assert r.status_code == 201, r.text
        # The answer's token is the project id (the plugin activates with it); the cookie is opaque.
        assert uuid.UUID(r.json()["project_token"]) == uuid.UUID(r.json()["project_id"])
        assert c.cookies["project_token"] != r.json()["project_token"]

        # The model id comes from the config the plugin got, as the plugin does it.
        models = ConfigFactory.parse_string(body["config"]).get("config.models.available")
        (tiny,) = [m for m in models if m["name"] == "code4me-tiny"]
        assert tiny["isDefault"] is True and tiny["isChatModel"] is False
        tiny_id = int(tiny["id"])
        r = c.post("/api/completion/request", json=P.completion_request([tiny_id]))
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        slot = data["completions"][0]
        assert slot["model_id"] == tiny_id and slot["model_name"] == "code4me-tiny"
        assert isinstance(slot["completion"], str) and slot["completion"].strip(), slot
        assert 0.0 < slot["confidence"] <= 1.0 and slot["generation_time"] >= 0
        qid = uuid.UUID(data["meta_query_id"])

        r = c.post(
            "/api/completion/feedback",
            json={"meta_query_id": str(qid), "model_id": tiny_id, "was_accepted": True},
        )
        assert r.status_code == 200, r.text
        for truth in ("f.read()\n", "f.read()  # x\n"):
            r = c.post(
                "/api/completion/feedback",
                json={
                    "meta_query_id": str(qid),
                    "model_id": tiny_id,
                    "was_accepted": True,
                    "ground_truth": truth,
                },
            )
            assert r.status_code == 200, r.text

    # The telemetry writer actor stores the query asynchronously.
    asyncio.run(_drained(ray_app_redis_url(services.redis_url)))
    rows = asyncio.run(_rows(services.database_url, qid))
    assert rows["meta"].query_type == "completion" and rows["meta"].total_serving_time_ms is not None
    assert rows["completion_query"] is not None
    keys = Keyring.parse(RAY_ENCRYPTION_KEYS)
    assert rows["context"].file_name == "example.py"
    assert opened(rows["context"], keys)["prefix"].endswith("return f.")  # type: ignore[union-attr]
    assert rows["contextual"].language_id == 1 and rows["contextual"].trigger_type_id == 2
    assert rows["behavioral"].typing_speed == 3.5
    (gen,) = rows["generations"]
    assert opened(gen, keys)["completion"] == slot["completion"] and gen.was_accepted and gen.error is None
    assert gen.token_logprobs and len(gen.token_logprobs) >= 1 and all(lp <= 0 for lp in gen.token_logprobs)
    assert abs(gen.confidence - slot["confidence"]) < 1e-9
    truths = [opened(t, keys)["ground_truth"] for t in rows["truths"]]
    assert sorted(truths) == sorted(["f.read()\n", "f.read()  # x\n"])  # type: ignore[type-var]
    assert rows["session"].end_time is None and rows["project"].project_name == "e2e"
    assert rows["member"].role == "owner"
    assert rows["model"].model_name == "code4me-tiny" and rows["model"].family == "code4me"


def test_unknown_model_and_missing_cookie_over_http(serve_app: str) -> None:
    with httpx.Client(base_url=serve_app, timeout=30) as c:
        r = c.post("/api/completion/request", json=P.completion_request([1]))
        assert r.status_code == 401 and "auth token" in r.json()["message"]
        r = c.post("/api/user/authenticate", json={"email": "x@example.org"})
        assert r.status_code == 422 and "Password is required" in r.json()["message"]
        r = c.post("/api/user/authenticate", json={"password": "x"})
        assert r.status_code == 422 and "email" in r.json()["message"]
        r = c.head("/api/ping")
        assert r.status_code == 200


async def _plugin_against_real_models(base_url: str) -> tuple[dict, dict]:
    ide = PluginIDE(httpx.AsyncHTTPTransport(), base_url)
    try:
        await ide.sign_up(P.new_email(), P.STRONG_PASSWORD)
        await ide.start_project("real")
        r = await ide.inline_completion(
            "real",
            completion_body(
                COMPLETION_MODEL_ID,
                "import os\n\n\ndef read_file(path):\n    with open(path) as f:\n        return f.",
            ),
        )
        assert r.status_code == 200, r.text
        completion = r.json()["data"]["completions"][0]
        body = chat_body(
            [CHAT_MODEL_ID], str(uuid.uuid4()), [("user", "Write a function that reverses a string.")]
        )
        r = await ide.chat("real", body)
        assert r.status_code == 200, r.text
        return completion, r.json()["history"][0]["assistant_responses"][0]
    finally:
        await ide.aclose()


def test_the_plugins_ids_reach_the_shipped_models(serve_app: str) -> None:
    """The plugin's plugin.conf ids 1 and 3 are answered by the shipped completion and chat models."""
    completion, answer = asyncio.run(_plugin_against_real_models(serve_app))
    assert completion["model_id"] == COMPLETION_MODEL_ID and completion["model_name"] == "code4me-tiny"
    assert completion["completion"].strip() and "message" not in completion
    assert answer["model_id"] == CHAT_MODEL_ID and answer["model_name"] == "code4me-tiny-chat"
    assert answer["completion"].strip() and "message" not in answer


def test_tabby_and_openai_routes_through_the_serve_proxy(serve_app: str) -> None:
    """An API token's routes through Serve's proxy to the real models: Tabby's health and completion, OpenAI's
    models, completion (streamed and not, the same text) and an error in OpenAI's shape."""
    with httpx.Client(base_url=serve_app, timeout=60) as c:
        email = P.new_email()
        assert c.post("/api/user/create", json=P.user_create(email)).status_code == 201
        assert c.post("/api/user/authenticate", json=P.authenticate(email)).status_code == 200
        r = c.post("/api/user/tokens", json={"name": "proxy"})
        assert r.status_code == 201, r.text
        c.cookies.clear()
        h = {"authorization": f"Bearer {r.json()['data']['token']}"}
        r = c.get("/v1/health", headers=h)
        assert r.status_code == 200 and r.json()["model"] == "code4me-tiny", r.text
        prefix = "import os\n\n\ndef read_file(path):\n    with open(path) as f:\n        return f."
        tabby = {"language": "python", "segments": {"prefix": prefix, "suffix": "\n"}}
        r = c.post("/v1/completions", json=tabby, headers=h)
        assert r.status_code == 200 and r.json()["id"].startswith("cmpl-") and r.json()["choices"], r.text
        r = c.get("/openai/v1/models", headers=h)
        assert r.status_code == 200 and "code4me-tiny" in [m["id"] for m in r.json()["data"]], r.text
        body = {"model": "code4me-tiny", "prompt": prefix, "suffix": "\n", "max_tokens": 8}
        r = c.post("/openai/v1/completions", json=body, headers=h)
        assert r.status_code == 200, r.text
        (choice,) = r.json()["choices"]
        assert choice["text"].strip() and choice["finish_reason"] in ("stop", "length")
        r = c.post("/openai/v1/completions", json={**body, "stream": True}, headers=h)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        assert "".join(json.loads(e[6:])["choices"][0]["text"] for e in events[:-1]) == choice["text"]
        r = c.post("/openai/v1/completions", json={**body, "model": "nope"}, headers=h)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
