"""Privacy on real PostgreSQL and Redis: the export, complete account deletion, and retention."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, select
from sqlmodel import SQLModel

from app.identity import tokens
from app.infra.encryption import (
    chunk_aad,
    context_aad,
    generation_aad,
    ground_truth_aad,
    message_aad,
    opened,
    title_aad,
)
from app.infra.state import AppState
from app.services import users
from app.services.retention import delete_expired_data
from db.tables import (
    AuditEvent,
    BehavioralTelemetry,
    Chat,
    ChatMessage,
    ChatQuery,
    CompletionQuery,
    Context,
    ContextChunk,
    ContextualTelemetry,
    Generation,
    GroundTruth,
    MetaQuery,
    Project,
    ProjectMember,
    Session,
    Study,
    StudyArm,
    StudyAssignment,
    User,
)
from tests.utils import payloads as P
from tests.utils.asgi_api import model_id, settle, signed_in

# The audit log keeps its records of a deleted account until AUDIT_RETENTION_DAYS (README "Audit log"):
# the deletion tests check that apart from the other tables.
AUDIT_TABLE = AuditEvent.__tablename__


async def table_counts(state: AppState) -> dict[str, int]:
    """Rows in every table of the schema but the audit log."""
    async with state.sessionmaker() as db:
        return {
            t.name: int((await db.execute(select(func.count()).select_from(t))).scalar_one())
            for t in SQLModel.metadata.sorted_tables
            if t.name != AUDIT_TABLE
        }


async def audit_trail(state: AppState, user_id: uuid.UUID) -> list[str]:
    """The actions the audit log holds of a user, oldest first."""
    async with state.sessionmaker() as db:
        query = select(AuditEvent.action).where(AuditEvent.actor_id == user_id).order_by(AuditEvent.audit_id)  # type: ignore[arg-type]
        return list((await db.execute(query)).scalars())


async def me(c: httpx.AsyncClient) -> uuid.UUID:
    """The signed-in user's id."""
    return uuid.UUID((await c.get("/api/user/get")).json()["user"]["user_id"])


async def active_project(state: AppState, c: httpx.AsyncClient) -> uuid.UUID:
    """The project behind the client's project cookie."""
    raw = await state.redis.get(tokens.project_key(c.cookies.get("project_token") or ""))
    return uuid.UUID(json.loads(raw)["project_id"])


async def complete_with_feedback(state: AppState, c: httpx.AsyncClient, prefix: str, truth: str) -> uuid.UUID:
    """One completion on two models (one failing) with an accepted suggestion and a ground truth."""
    ids = [model_id(state, "scripted"), model_id(state, "broken")]
    r = await c.post("/api/completion/request", json=P.completion_request(ids, prefix=prefix))
    assert r.status_code == 200, r.text
    qid = r.json()["data"]["meta_query_id"]
    r = await c.post(
        "/api/completion/feedback",
        json={"meta_query_id": qid, "model_id": ids[0], "was_accepted": True, "ground_truth": truth},
    )
    assert r.status_code == 200, r.text
    await settle(state)
    return uuid.UUID(qid)


async def add_chat(
    state: AppState, user_id: uuid.UUID, project_id: uuid.UUID, words: str
) -> tuple[uuid.UUID, uuid.UUID]:
    """A chat with one turn (its query, context, the user's message and a model's answer), written directly."""
    async with state.sessionmaker() as db:
        chat_id = uuid.uuid4()
        title = state.keyring.seal(f"chat about {words}", title_aad(chat_id))
        chat = Chat(chat_id=chat_id, user_id=user_id, project_id=project_id, title=title)
        cid, asked, answered = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        seal = state.keyring.seal  # rows written here are sealed as the telemetry writer seals them
        context = Context(
            context_id=cid,
            prefix=seal(f"# {words}\n", context_aad("prefix", cid)),
            suffix=seal("", context_aad("suffix", cid)),
            file_name="chat.py",
        )
        db.add_all([chat, context])
        await db.flush()
        meta = MetaQuery(
            user_id=user_id, project_id=project_id, query_type="chat", context_id=context.context_id
        )
        db.add(meta)
        await db.flush()
        db.add(ChatQuery(meta_query_id=meta.meta_query_id, chat_id=chat.chat_id))
        db.add(
            ChatMessage(
                message_id=asked,
                chat_id=chat.chat_id,
                meta_query_id=meta.meta_query_id,
                role="user",
                content=seal(f"explain {words}", message_aad(asked)),
            )
        )
        db.add(
            ChatMessage(
                message_id=answered,
                chat_id=chat.chat_id,
                meta_query_id=meta.meta_query_id,
                role="assistant",
                content=seal(f"{words} means...", message_aad(answered)),
                model_id=model_id(state, "chatty"),
            )
        )
        await db.commit()
        return chat.chat_id, meta.meta_query_id


async def add_study(state: AppState) -> tuple[uuid.UUID, int]:
    """A study with one arm (made by nobody in particular)."""
    async with state.sessionmaker() as db:
        study = Study(name=f"study-{uuid.uuid4().hex[:8]}")
        db.add(study)
        await db.flush()
        arm = StudyArm(study_id=study.study_id, name="a", model_ids=[model_id(state, "scripted")])
        db.add(arm)
        await db.commit()
        assert arm.arm_id is not None
        return study.study_id, arm.arm_id


async def busy_user(
    client: httpx.AsyncClient, state: AppState, words: str, study: tuple[uuid.UUID, int]
) -> dict[str, Any]:
    """A user who did a bit of everything: session, project, completions, feedback, chat, study, indexed file."""
    c, email = await signed_in(client)
    user_id = await me(c)
    project_id = await active_project(state, c)
    qid = await complete_with_feedback(
        state, c, prefix=f"def {words}():\n    return ", truth=f"{words}_truth"
    )
    chat_id, chat_qid = await add_chat(state, user_id, project_id, words)
    async with state.sessionmaker() as db:
        db.add(StudyAssignment(study_id=study[0], user_id=user_id, arm_id=study[1]))
        db.add(
            ContextChunk(
                project_id=project_id,
                file_path="src/a.py",
                chunk_index=0,
                start_line=0,
                end_line=1,
                content=state.keyring.seal(f"{words} = 1\n", chunk_aad(project_id, 0, "src/a.py")),
                content_hash="0" * 64,
                embedding=[1.0] + [0.0] * 383,
            )
        )
        await db.commit()
    return {
        "client": c,
        "email": email,
        "user_id": user_id,
        "project_id": project_id,
        "query_id": qid,
        "chat_id": chat_id,
        "chat_query_id": chat_qid,
    }


async def rows_of(state: AppState, user: dict[str, Any]) -> dict[str, int]:
    """How many rows of the user's own things still exist (the untouched user's check)."""
    async with state.sessionmaker() as db:

        async def n(stmt: Any) -> int:
            return int((await db.execute(select(func.count()).select_from(stmt.subquery()))).scalar_one())

        uid = user["user_id"]
        return {
            "user": await n(select(User).where(User.user_id == uid)),
            "meta_query": await n(select(MetaQuery).where(MetaQuery.user_id == uid)),
            "had_generation": await n(select(Generation).where(Generation.meta_query_id == user["query_id"])),
            "ground_truth": await n(select(GroundTruth).where(GroundTruth.meta_query_id == user["query_id"])),
            "chat_message": await n(select(ChatMessage).where(ChatMessage.chat_id == user["chat_id"])),
            "project_member": await n(select(ProjectMember).where(ProjectMember.user_id == uid)),
            "session": await n(select(Session).where(Session.user_id == uid)),
            "study_assignment": await n(select(StudyAssignment).where(StudyAssignment.user_id == uid)),
            "context_chunk": await n(
                select(ContextChunk).where(ContextChunk.project_id == user["project_id"])
            ),
        }


async def redis_mentions(state: AppState, user_id: uuid.UUID) -> list[str]:
    """Redis keys whose name or string value mentions the user."""
    found = []
    async for key in state.redis.scan_iter(match="c4m:*"):
        name = key.decode()
        value = await state.redis.get(key) if await state.redis.type(key) == b"string" else b""
        if str(user_id) in name or str(user_id).encode() in (value or b""):
            found.append(name)
    return found


# ---------------------------------------------------------------- export


async def test_export_holds_everything_the_user_produced(api) -> None:
    client, state = api
    study = await add_study(state)
    other = await busy_user(client, state, "bystander", study)
    u = await busy_user(client, state, "exported", study)
    c = u["client"]
    await c.put("/api/user/update", json={"name": "Export Me", "preference": {"data_retention_days": 30}})
    r = await c.get("/api/user/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "attachment" in r.headers["content-disposition"]
    doc = r.json()
    assert doc["format"] == "code4me-export/1"
    assert doc["user"]["email"] == u["email"] and doc["user"]["name"] == "Export Me"
    assert "password_hash" not in r.text and "$argon2" not in r.text
    assert doc["preference"]["data_retention_days"] == 30
    assert [p["project_id"] for p in doc["projects"]] == [str(u["project_id"])]
    assert doc["projects"][0]["role"] == "owner"
    assert len(doc["sessions"]) == 1 and doc["sessions"][0]["project_ids"] == [str(u["project_id"])]
    assert [a["arm_id"] for a in doc["study_assignments"]] == [study[1]]
    queries = {q["meta_query_id"]: q for q in doc["queries"]}
    assert set(queries) == {str(u["query_id"]), str(u["chat_query_id"])}
    q = queries[str(u["query_id"])]
    assert q["context"]["prefix"].startswith("def exported():")
    assert q["contextual_telemetry"]["file_path"] == "src/example.py"
    assert q["behavioral_telemetry"]["typing_speed"] == 3.5
    assert q["completion_query"]["stop_sequences"] == []
    gens = {g["model_name"]: g for g in q["generations"]}
    assert gens["scripted"]["completion"] == "read()" and gens["scripted"]["was_accepted"] is True
    assert gens["broken"]["error"] == "RuntimeError"
    assert [t["ground_truth"] for t in q["ground_truths"]] == ["exported_truth"]
    chat_q = queries[str(u["chat_query_id"])]
    assert (
        chat_q["chat_query"]["chat_id"] == str(u["chat_id"]) and chat_q["context"]["prefix"] == "# exported\n"
    )
    assert [ch["chat_id"] for ch in doc["chats"]] == [str(u["chat_id"])]
    assert [m["content"] for m in doc["chats"][0]["messages"]] == ["explain exported", "exported means..."]
    # Nothing of anyone else.
    assert str(other["query_id"]) not in r.text and "bystander" not in r.text
    assert (
        await client.__class__(transport=client._transport, base_url="http://test").get("/api/user/export")
    ).status_code == 401


async def test_export_pages_through_many_queries_in_order(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    user_id = await me(c)
    start = datetime.now(UTC) - timedelta(days=1)
    rows = [
        {
            "meta_query_id": uuid.uuid4(),
            "user_id": user_id,
            "query_type": "completion",
            "timestamp": start + timedelta(seconds=i // 3),
        }
        for i in range(1203)
    ]
    async with state.sessionmaker() as db:
        await db.execute(insert(MetaQuery), rows)
        await db.commit()
    doc = (await c.get("/api/user/export")).json()
    got = [q["meta_query_id"] for q in doc["queries"]]
    assert len(got) == len(set(got)) == 1203
    assert set(got) == {str(r["meta_query_id"]) for r in rows}
    stamps = [q["timestamp"] for q in doc["queries"]]
    assert stamps == sorted(stamps)


# ---------------------------------------------------------------- deletion


async def test_delete_with_data_removes_every_row_and_token_of_the_user(api) -> None:
    client, state = api
    study = await add_study(state)
    bystander = await busy_user(client, state, "stays", study)
    bystander_rows = await rows_of(state, bystander)
    before = await table_counts(state)

    gone = await busy_user(client, state, "goes", study)
    c = gone["client"]
    # Also a member of the bystander's shared project, with a query there.
    async with state.sessionmaker() as db:
        db.add(ProjectMember(project_id=bystander["project_id"], user_id=gone["user_id"]))
        await db.commit()
    r = await c.put("/api/project/activate", json={"project_id": str(bystander["project_id"])})
    assert r.status_code == 200
    await complete_with_feedback(state, c, prefix="shared = ", truth="shared_truth")
    assert (await c.post("/api/user/verify/resend")).status_code == 200  # a pending mailed token
    assert await table_counts(state) != before

    r = await c.delete("/api/user/delete", params={"delete_data": "true"})
    assert r.status_code == 200, r.text
    assert await table_counts(state) == before
    trail = await audit_trail(state, gone["user_id"])
    assert trail[0] == "auth.sign_in" and trail[-1] == "user.delete"
    assert await rows_of(state, bystander) == bystander_rows
    assert await redis_mentions(state, gone["user_id"]) == []
    for path in ("/api/user/get", "/api/session/acquire"):
        assert (await c.get(path)).status_code == 401
    r = await c.post("/api/completion/request", json=P.completion_request([model_id(state, "scripted")]))
    assert r.status_code == 401
    assert (
        await client.post("/api/user/authenticate", json=P.authenticate(gone["email"]))
    ).status_code == 401
    # The address is free again.
    assert (await client.post("/api/user/create", json=P.user_create(gone["email"]))).status_code == 201


async def test_delete_without_data_keeps_only_anonymised_completion_rows(api) -> None:
    client, state = api
    study = await add_study(state)
    bystander = await busy_user(client, state, "remains", study)
    bystander_rows = await rows_of(state, bystander)
    before = await table_counts(state)

    gone = await busy_user(client, state, "anonymised", study)
    qid = gone["query_id"]
    r = await gone["client"].delete("/api/user/delete")  # delete_data defaults to false
    assert r.status_code == 200, r.text
    after = await table_counts(state)
    # One completion query on two models survives: its meta/completion query, generations and telemetry.
    kept = {
        "meta_query": 1,
        "completion_query": 1,
        "had_generation": 2,
        "contextual_telemetry": 1,
        "behavioral_telemetry": 1,
    }
    assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == kept
    async with state.sessionmaker() as db:
        meta = await db.get(MetaQuery, qid)
        assert meta is not None
        assert (meta.user_id, meta.session_id, meta.project_id, meta.context_id) == (None, None, None, None)
        assert meta.contextual_telemetry_id is not None
        ct = await db.get(ContextualTelemetry, meta.contextual_telemetry_id)
        assert ct is not None and ct.file_path is None and ct.language_id == 1
        assert await db.get(BehavioralTelemetry, meta.behavioral_telemetry_id) is not None
        assert await db.get(CompletionQuery, qid) is not None
        gens = (await db.execute(select(Generation).where(Generation.meta_query_id == qid))).scalars().all()
        assert {opened(g, state.keyring)["completion"] for g in gens} == {"read()", ""}
        assert (await db.execute(select(GroundTruth).where(GroundTruth.meta_query_id == qid))).first() is None
        assert await db.get(MetaQuery, gone["chat_query_id"]) is None
        assert await db.get(Chat, gone["chat_id"]) is None
    assert await rows_of(state, bystander) == bystander_rows
    assert await redis_mentions(state, gone["user_id"]) == []


async def test_delete_keeps_shared_projects_and_drops_solo_ones(api) -> None:
    client, state = api
    owner, _ = await signed_in(client)
    member, _ = await signed_in(client)
    owner_id, member_id = await me(owner), await me(member)
    shared = await active_project(state, owner)
    async with state.sessionmaker() as db:
        db.add(ProjectMember(project_id=shared, user_id=member_id))
        await db.commit()
    r = await owner.post("/api/project/create", json={"project_name": "only mine"})
    solo = uuid.UUID(r.json()["project_id"])
    r = await owner.delete("/api/user/delete?delete_user_data=true")  # the old server's parameter name
    assert r.status_code == 200
    async with state.sessionmaker() as db:
        project = await db.get(Project, shared)
        assert project is not None and project.created_by is None
        assert await db.get(ProjectMember, (shared, member_id)) is not None
        assert await db.get(ProjectMember, (shared, owner_id)) is None
        assert await db.get(Project, solo) is None
    r = await member.put("/api/project/activate", json={"project_id": str(shared)})
    assert r.status_code == 200


async def test_delete_rejects_bad_flag_and_needs_auth(api) -> None:
    client, _ = api
    c, _ = await signed_in(client)
    r = await c.delete("/api/user/delete", params={"delete_data": "perhaps"})
    assert r.status_code == 422 and "delete_data" in r.json()["message"]
    assert (await c.get("/api/user/get")).status_code == 200
    anonymous = client.__class__(transport=client._transport, base_url="http://test")
    assert (await anonymous.delete("/api/user/delete")).status_code == 401


# ---------------------------------------------------------------- preference changes


async def stored_parts(state: AppState, query_id: str) -> tuple[bool, bool, bool]:
    """(context, contextual telemetry, behavioral telemetry) stored for a query."""
    async with state.sessionmaker() as db:
        meta = await db.get(MetaQuery, uuid.UUID(query_id))
        assert meta is not None
        return (
            meta.context_id is not None,
            meta.contextual_telemetry_id is not None,
            meta.behavioral_telemetry_id is not None,
        )


async def test_a_preference_change_applies_to_the_very_next_completion(api) -> None:
    """The completion path reads a cached copy of the preference: every change must replace it at once."""
    client, state = api
    c, _ = await signed_in(client, preference={"store_context": True})
    ids = [model_id(state, "scripted")]

    async def complete() -> str:
        r = await c.post("/api/completion/request", json=P.completion_request(ids, prefix="total = "))
        assert r.status_code == 200, r.text
        return r.json()["data"]["meta_query_id"]

    first = await complete()  # fills the cached copy
    changes = {
        "store_context": False,
        "store_contextual_telemetry": False,
        "store_behavioral_telemetry": False,
    }
    r = await c.put("/api/user/update", json={"preference": changes})
    assert r.status_code == 200, r.text
    second = await complete()
    r = await c.put("/api/user/update", json={"preference": {"store_context": True}})
    assert r.status_code == 200, r.text
    third = await complete()
    await settle(state)
    assert await stored_parts(state, first) == (True, True, True)
    assert await stored_parts(state, second) == (False, False, False)
    assert await stored_parts(state, third) == (True, False, False)


async def test_a_reader_only_fills_a_missing_cached_preference(api) -> None:
    """Readers SET NX: one that read PostgreSQL before a change cannot put the old value back."""
    client, state = api
    c, _ = await signed_in(client, preference={"store_context": True})
    user_id = await me(c)
    key = f"c4m:user_snapshot:{user_id}"
    await state.redis.delete(key)
    read = await users.load_preference(state.sessionmaker, state.redis, user_id)
    assert read is not None and read["store_context"] is True
    assert json.loads(await state.redis.get(key)) == read
    assert 0 < await state.redis.ttl(key) <= users.USER_SNAPSHOT_TTL_S
    await state.redis.set(key, json.dumps({"store_context": False}))  # a writer's newer copy
    read = await users.load_preference(state.sessionmaker, state.redis, user_id)
    assert read is not None and read["store_context"] is True  # what this reader saw in PostgreSQL ...
    assert json.loads(await state.redis.get(key)) == {"store_context": False}  # ... does not replace it
    assert await users.load_preference(state.sessionmaker, state.redis, uuid.uuid4()) is None


async def test_a_deleted_account_cannot_complete_even_with_a_cached_preference(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    ids = [model_id(state, "scripted")]
    r = await c.post("/api/completion/request", json=P.completion_request(ids, prefix="x = "))
    assert r.status_code == 200, r.text
    user_id = await me(c)
    assert await state.redis.exists(f"c4m:user_snapshot:{user_id}")
    cookies = dict(c.cookies)
    assert (await c.delete("/api/user/delete", params={"delete_data": "true"})).status_code == 200
    assert not await state.redis.exists(f"c4m:user_snapshot:{user_id}")
    again = client.__class__(transport=client._transport, base_url="http://test", cookies=cookies)
    r = await again.post("/api/completion/request", json=P.completion_request(ids, prefix="x = "))
    assert r.status_code == 401, r.text


# ---------------------------------------------------------------- retention


async def dated_query(state: AppState, user_id: uuid.UUID, when: datetime) -> uuid.UUID:
    """A completion query at `when` with context, telemetry, a generation and a ground truth."""
    async with state.sessionmaker() as db:
        cid, eid = uuid.uuid4(), uuid.uuid4()
        ctx = Context(
            context_id=cid,
            prefix=state.keyring.seal("x = ", context_aad("prefix", cid)),
            suffix=state.keyring.seal("", context_aad("suffix", cid)),
        )
        ct = ContextualTelemetry(version_id=1, trigger_type_id=1, language_id=1)
        bt = BehavioralTelemetry(typing_speed=1.0)
        db.add_all([ctx, ct, bt])
        await db.flush()
        meta = MetaQuery(
            user_id=user_id,
            query_type="completion",
            timestamp=when,
            context_id=ctx.context_id,
            contextual_telemetry_id=ct.contextual_telemetry_id,
            behavioral_telemetry_id=bt.behavioral_telemetry_id,
        )
        db.add(meta)
        await db.flush()
        db.add(CompletionQuery(meta_query_id=meta.meta_query_id))
        db.add(
            Generation(
                meta_query_id=meta.meta_query_id,
                model_id=model_id(state, "scripted"),
                completion=state.keyring.seal(
                    "1", generation_aad(meta.meta_query_id, model_id(state, "scripted"))
                ),
                generation_time_ms=1,
                created_at=when,
            )
        )
        truth = state.keyring.seal("x = 1", ground_truth_aad(eid))
        db.add(
            GroundTruth(
                meta_query_id=meta.meta_query_id, event_id=eid, ground_truth=truth, truth_timestamp=when
            )
        )
        await db.commit()
        return meta.meta_query_id


async def retention_user(state: AppState, preference: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A user with queries, chat messages and sessions at 400, 31 and 29 days before `now`."""
    async with state.sessionmaker() as db:
        user = User(email=P.new_email(), name="r", config_id=1, preference=preference)
        db.add(user)
        await db.commit()
    days = (400, 31, 29)
    out: dict[str, Any] = {"user_id": user.user_id, "queries": {}, "messages": {}, "sessions": {}}
    async with state.sessionmaker() as db:
        old_id, mixed_id = uuid.uuid4(), uuid.uuid4()
        old_title, mixed_title = (
            state.keyring.seal(t, title_aad(i)) for t, i in (("old", old_id), ("mixed", mixed_id))
        )
        long_ago = now - timedelta(days=400)
        old_chat = Chat(chat_id=old_id, user_id=user.user_id, title=old_title, created_at=long_ago)
        mixed_chat = Chat(chat_id=mixed_id, user_id=user.user_id, title=mixed_title, created_at=long_ago)
        db.add_all([old_chat, mixed_chat])
        await db.flush()
        for d in days:
            when = now - timedelta(days=d)
            chat = old_chat if d > 30 else mixed_chat
            mid = uuid.uuid4()
            text = state.keyring.seal(f"{d} days ago", message_aad(mid))
            msg = ChatMessage(
                message_id=mid, chat_id=chat.chat_id, role="user", content=text, created_at=when
            )
            ended = Session(user_id=user.user_id, start_time=when - timedelta(hours=1), end_time=when)
            db.add_all([msg, ended])
            await db.flush()
            out["messages"][d], out["sessions"][d] = msg.message_id, ended.session_id
        live = Session(
            user_id=user.user_id, start_time=now - timedelta(days=400)
        )  # never ended: its token may live
        db.add(live)
        await db.commit()
        out["chats"] = {"old": old_chat.chat_id, "mixed": mixed_chat.chat_id}
        out["live_session"] = live.session_id
    for d in days:
        out["queries"][d] = await dated_query(state, user.user_id, now - timedelta(days=d))
    return out


async def row_exists(state: AppState, model: type[SQLModel], key: Any) -> bool:
    """Whether a row with this primary key exists."""
    async with state.sessionmaker() as db:
        return await db.get(model, key) is not None


async def query_rows(state: AppState, qid: uuid.UUID) -> dict[str, int]:
    """The rows hanging off a query (0s once it is swept)."""
    async with state.sessionmaker() as db:
        meta = await db.get(MetaQuery, qid)
        if meta is None:
            return {"meta": 0}
        return {
            "meta": 1,
            "context": int(await db.get(Context, meta.context_id) is not None),
            "generation": len(
                (await db.execute(select(Generation).where(Generation.meta_query_id == qid))).all()
            ),
            "truth": len(
                (await db.execute(select(GroundTruth).where(GroundTruth.meta_query_id == qid))).all()
            ),
        }


async def test_retention_deletes_exactly_what_is_older_than_each_users_period(api) -> None:
    _, state = api
    now = datetime.now(UTC)
    thirty = await retention_user(state, {"data_retention_days": 30}, now)
    forever = await retention_user(state, {"data_retention_days": None}, now)
    default = await retention_user(state, {"store_context": True}, now)  # no key: the default, 365 days
    async with state.sessionmaker() as db:
        # Remember which context/telemetry rows the swept queries used, to check they went too.
        old = await db.get(MetaQuery, thirty["queries"][31])
        assert old is not None
        orphans = (old.context_id, old.contextual_telemetry_id, old.behavioral_telemetry_id)

    async with state.sessionmaker() as db:
        result = await delete_expired_data(db, now)
    assert result.queries >= 3 and result.chat_messages >= 3 and result.sessions >= 3 and result.chats >= 1

    full = {"meta": 1, "context": 1, "generation": 1, "truth": 1}
    assert await query_rows(state, thirty["queries"][400]) == {"meta": 0}
    assert await query_rows(state, thirty["queries"][31]) == {"meta": 0}
    assert await query_rows(state, thirty["queries"][29]) == full
    assert not await row_exists(state, Context, orphans[0])
    assert not await row_exists(state, ContextualTelemetry, orphans[1])
    assert not await row_exists(state, BehavioralTelemetry, orphans[2])
    assert [await row_exists(state, ChatMessage, thirty["messages"][d]) for d in (400, 31, 29)] == [
        False,
        False,
        True,
    ]
    assert [await row_exists(state, Session, thirty["sessions"][d]) for d in (400, 31, 29)] == [
        False,
        False,
        True,
    ]
    assert not await row_exists(state, Chat, thirty["chats"]["old"])  # emptied and old
    assert await row_exists(state, Chat, thirty["chats"]["mixed"])  # old, but a recent message remains
    assert await row_exists(state, Session, thirty["live_session"])

    for d in (400, 31, 29):
        assert await query_rows(state, forever["queries"][d]) == full
        assert await row_exists(state, ChatMessage, forever["messages"][d])
        assert await row_exists(state, Session, forever["sessions"][d])
    assert await row_exists(state, Chat, forever["chats"]["old"])

    assert await query_rows(state, default["queries"][400]) == {"meta": 0}
    assert await query_rows(state, default["queries"][31]) == full
    assert [await row_exists(state, ChatMessage, default["messages"][d]) for d in (400, 31, 29)] == [
        False,
        True,
        True,
    ]

    # A second sweep at the same instant finds nothing more of these users.
    async with state.sessionmaker() as db:
        await delete_expired_data(db, now)
    assert await query_rows(state, thirty["queries"][29]) == full
    assert await query_rows(state, default["queries"][31]) == full
