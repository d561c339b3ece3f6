"""The API on real PostgreSQL and Redis (models replaced by a scripted gateway): flows and every bad input."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from app.identity import tokens
from app.infra.encryption import opened
from db.tables import Context, Generation, GroundTruth, MetaQuery, User
from tests.utils import payloads as P
from tests.utils.asgi_api import count, fresh_client, model_id, settle, signed_in


async def test_full_flow_stores_rows_and_side_by_side_failure_slot(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    ids = [model_id(state, "scripted"), model_id(state, "broken")]
    r = await c.post("/api/completion/request", json=P.completion_request(ids))
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    ok, failed = data["completions"]
    assert ok["completion"] == "read()" and ok["model_name"] == "scripted"
    assert failed == {
        "model_id": ids[1],
        "model_name": "broken",
        "completion": "",
        "generation_time": 0,
        "confidence": 0.0,
        "message": "Completion for model failed",
    }
    qid = uuid.UUID(data["meta_query_id"])
    r = await c.post(
        "/api/completion/feedback",
        json={"meta_query_id": str(qid), "model_id": ids[0], "was_accepted": True, "ground_truth": "read()"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"meta_query_id": str(qid), "model_id": ids[0]}
    await settle(state)
    async with state.sessionmaker() as db:
        gens = (await db.execute(select(Generation).where(Generation.meta_query_id == qid))).scalars().all()
        by_model = {g.model_id: g for g in gens}
        assert by_model[ids[0]].was_accepted and by_model[ids[0]].confidence == 0.5
        assert by_model[ids[1]].error == "RuntimeError" and not by_model[ids[1]].was_accepted
        truths = (
            (await db.execute(select(GroundTruth).where(GroundTruth.meta_query_id == qid))).scalars().all()
        )
        assert [opened(t, state.keyring)["ground_truth"] for t in truths] == ["read()"]
    r = await c.get(f"/api/completion/{qid}")
    assert r.status_code == 200 and len(r.json()["data"]["completions"]) == 2


async def test_trailing_slash_and_unknown_keys_accepted(api) -> None:
    client, _ = api
    r = await client.post("/api/user/create/", json={**P.user_create(), "unexpected": 1})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"name": "x", "password": P.STRONG_PASSWORD}, 422, "email"),
        ({"email": "not-an-email", "name": "x", "password": P.STRONG_PASSWORD}, 422, "email"),
        ({"email": "a@example.org", "name": "x", "password": "short"}, 422, "Password must"),
        ({"email": "a@example.org", "name": "x", "password": "alllowercase1"}, 422, "Password must"),
        ({"email": "a@example.org", "name": "x", "password": "With Space1A"}, 422, "Password must"),
        ({"email": "a@example.org", "name": ["x"], "password": P.STRONG_PASSWORD}, 422, "name"),
        (
            {"email": "a@example.org", "name": "x", "password": P.STRONG_PASSWORD, "config_id": 999},
            422,
            "config_id",
        ),
    ],
)
async def test_user_create_rejects_bad_input(api, body, status, words) -> None:
    client, state = api
    before = await count(state, User)
    r = await client.post("/api/user/create", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    assert await count(state, User) == before


async def test_duplicate_email_is_not_told(api) -> None:
    client, state = api
    body = P.user_create()
    assert (await client.post("/api/user/create", json=body)).status_code == 201
    before = await count(state, User)
    r = await client.post("/api/user/create", json={**body, "email": body["email"].upper()})
    assert r.status_code == 201 and r.json()["message"] == "User created successfully"
    assert await count(state, User) == before  # test_accounts.py: the owner is told by mail


async def test_wrong_password_and_unknown_email_are_401(api) -> None:
    client, _ = api
    body = P.user_create()
    await client.post("/api/user/create", json=body)
    r = await client.post("/api/user/authenticate", json=P.authenticate(body["email"], "Wr0ngPassword"))
    assert r.status_code == 401 and r.json()["message"] == "Invalid email or password"
    r = await client.post("/api/user/authenticate", json=P.authenticate(P.new_email()))
    assert r.status_code == 401 and r.json()["message"] == "Invalid email or password"
    assert "auth_token" not in r.cookies


async def test_missing_and_expired_cookies_are_401(api) -> None:
    client, state = api
    fresh = fresh_client(client)
    r = await fresh.get("/api/session/acquire")
    assert r.status_code == 401 and "auth token" in r.json()["message"]
    fresh.cookies.set("auth_token", "expired-or-made-up")
    r = await fresh.get("/api/session/acquire")
    assert r.status_code == 401 and "expired" in r.json()["message"]
    c, _ = await signed_in(client)
    # Expire the session token server-side: completion must answer 401, not 500.
    await state.redis.delete(tokens.session_key(c.cookies.get("session_token") or ""))
    r = await c.post("/api/completion/request", json=P.completion_request([model_id(state, "scripted")]))
    assert r.status_code == 401 and "session" in r.json()["message"]


async def test_session_acquire_reuses_live_session(api) -> None:
    client, _ = api
    c, _ = await signed_in(client)
    first = c.cookies.get("session_token")
    r = await c.get("/api/session/acquire")
    assert r.json()["session_token"] == first


@pytest.mark.parametrize(
    "mutate, status, words",
    [
        (lambda b, ids: b.update(model_ids=[987654]), 422, "Unknown model id 987654"),
        (lambda b, ids: b.update(model_ids=[]), 422, "model_ids"),
        (lambda b, ids: b.update(model_ids="one"), 422, "model_ids"),
        (lambda b, ids: b.update(model_ids=[ids["chatty"]]), 422, "chat model"),
        (lambda b, ids: b.pop("context"), 422, "context"),
        (lambda b, ids: b["contextual_telemetry"].update(language_id=99999), 422, "language_id"),
        (lambda b, ids: b["contextual_telemetry"].update(trigger_type_id=42), 422, "trigger_type_id"),
        (lambda b, ids: b["contextual_telemetry"].update(version_id="abc"), 422, "version_id"),
        (lambda b, ids: b["context"].update(prefix="x" * 20_000), 413, "over the limit"),
    ],
)
async def test_completion_rejects_bad_input_and_stores_nothing(api, mutate, status, words) -> None:
    client, state = api
    c, _ = await signed_in(client)
    ids = {"scripted": model_id(state, "scripted"), "chatty": model_id(state, "chatty")}
    body = P.completion_request([ids["scripted"]])
    mutate(body, ids)
    before = (await count(state, MetaQuery), await count(state, Context))
    r = await c.post("/api/completion/request", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    await settle(state)
    assert (await count(state, MetaQuery), await count(state, Context)) == before


async def test_feedback_errors(api) -> None:
    client, state = api
    alice, _ = await signed_in(client)
    bob, _ = await signed_in(client)
    sid = model_id(state, "scripted")
    r = await alice.post("/api/completion/request", json=P.completion_request([sid]))
    qid = r.json()["data"]["meta_query_id"]
    r = await bob.post(
        "/api/completion/feedback", json={"meta_query_id": qid, "model_id": sid, "was_accepted": True}
    )
    assert r.status_code == 403
    r = await bob.get(f"/api/completion/{qid}")
    assert r.status_code == 403
    r = await alice.post(
        "/api/completion/feedback",
        json={"meta_query_id": str(uuid.uuid4()), "model_id": sid, "was_accepted": True},
    )
    assert r.status_code == 404
    r = await alice.post(
        "/api/completion/feedback", json={"meta_query_id": qid, "model_id": 424242, "was_accepted": True}
    )
    assert r.status_code == 404
    r = await alice.post(
        "/api/completion/feedback",
        json={"meta_query_id": "not-a-uuid", "model_id": sid, "was_accepted": True},
    )
    assert r.status_code == 422
    r = await alice.post("/api/completion/feedback", json={"meta_query_id": qid, "model_id": sid})
    assert r.status_code == 422 and "was_accepted" in r.json()["message"]


async def test_project_activate_is_members_only(api) -> None:
    client, _ = api
    alice, _ = await signed_in(client)
    bob, _ = await signed_in(client)
    r = await alice.post("/api/project/create", json={"project_name": "alice's"})
    pid = r.json()["project_id"]
    r = await bob.put("/api/project/activate", json={"project_id": pid})
    assert r.status_code == 403
    r = await alice.put("/api/project/activate", json={"project_id": pid})
    assert r.status_code == 200
    r = await bob.put("/api/project/activate", json={"project_id": str(uuid.uuid4())})
    assert r.status_code == 404


async def test_preferences_off_store_no_context(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    await settle(state)
    before = (await count(state, Context), await count(state, MetaQuery))
    r = await c.post(
        "/api/completion/request",
        json=P.completion_request([model_id(state, "scripted")], store_context=False),
    )
    assert r.status_code == 200
    await settle(state)
    assert (await count(state, Context), await count(state, MetaQuery)) == (before[0], before[1] + 1)


async def test_malformed_json_is_422(api) -> None:
    client, _ = api
    r = await client.post(
        "/api/user/create", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


async def test_completion_with_all_context_files_gets_snippets_of_other_files(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    sid = model_id(state, "scripted")
    helper = ["def read_config(path):", "    with open(path) as handle:", "        return json.load(handle)"]
    update = {"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": helper}
    r = await c.post(
        "/api/completion/multi-file-context/update", json={"context_updates": {"src/config.py": [update]}}
    )
    assert r.status_code == 200, r.text
    body = P.completion_request(
        [sid], prefix="from config import read_config\n\nsettings = read_config(", suffix=")\n"
    )
    body["context"]["context_files"] = ["*"]
    r = await c.post("/api/completion/request", json=body)
    assert r.status_code == 200, r.text
    sent = [req for name, req in state.gateway.calls if name == "scripted"][-1]  # type: ignore[attr-defined]
    assert [s.path for s in sent.context_snippets] == ["src/config.py"]
    assert "def read_config(path):" in sent.context_snippets[0].text
    body["context"]["context_files"] = []
    r = await c.post("/api/completion/request", json=body)
    assert [req for name, req in state.gateway.calls if name == "scripted"][-1].context_snippets == ()  # type: ignore[attr-defined]


async def test_completion_answer_carries_its_stage_timings(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    r = await c.post("/api/completion/request", json=P.completion_request([model_id(state, "scripted")]))
    assert r.status_code == 200, r.text
    stages = {}
    for part in r.headers["server-timing"].split(","):
        name, dur = part.strip().split(";dur=")
        stages[name] = float(dur)
    assert list(stages) == ["prepare", "models", "events", "app"]
    assert all(ms >= 0 for ms in stages.values())
    assert stages["prepare"] + stages["models"] + stages["events"] <= stages["app"]
    # Only durations: nothing of the request (context, tokens) is echoed in the header.
    assert (
        "def" not in r.headers["server-timing"]
        and c.cookies.get("auth_token") not in r.headers["server-timing"]
    )
