"""Secrets are redacted on every path into storage and (by default) into models, on real PostgreSQL and Redis."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select

from app.infra.encryption import opened
from db.tables import ChatMessage, Context, GroundTruth, MetaQuery
from tests.utils import payloads as P
from tests.utils.asgi_api import model_id, settle, signed_in

# Built at run time so that no secret-looking literal sits in the repository.
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
AWS_KEY = "AKIA" + "Z7XQ2MLK4PRT9WNB"


async def test_completion_chat_feedback_and_context_never_store_or_send_secrets(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    sid = model_id(state, "scripted")
    prefix = f'import os\nGITHUB = "{GITHUB_TOKEN}"\naws_key = "{AWS_KEY}"\n\ndef main():\n    return os.'
    r = await c.post("/api/completion/request", json=P.completion_request([sid], prefix=prefix))
    assert r.status_code == 200, r.text
    qid = uuid.UUID(r.json()["data"]["meta_query_id"])
    sent = [req for name, req in state.gateway.calls if name == "scripted"][-1]  # type: ignore[attr-defined]
    assert GITHUB_TOKEN not in sent.prefix and AWS_KEY not in sent.prefix and "<REDACTED:" in sent.prefix
    assert sent.prefix.endswith("return os.") and sent.prefix.count("\n") == prefix.count("\n")
    r = await c.post(
        "/api/completion/feedback",
        json={
            "meta_query_id": str(qid),
            "model_id": sid,
            "was_accepted": True,
            "ground_truth": f"token = '{GITHUB_TOKEN}'",
        },
    )
    assert r.status_code == 200

    chat_id = uuid.uuid4()
    chat = {
        "model_ids": [model_id(state, "chatty")],
        "chat_id": str(chat_id),
        "messages": [["user", f"why does {GITHUB_TOKEN} fail?"]],
    }
    r = await c.post("/api/chat/request", json=chat)
    assert r.status_code == 200, r.text
    assert GITHUB_TOKEN not in r.text  # the answer quoted the (redacted) question

    r = await c.post(
        "/api/completion/multi-file-context/update",
        json={
            "context_updates": {
                "settings.py": [
                    {
                        "change_type": "insert",
                        "start_line": 0,
                        "end_line": 0,
                        "new_lines": ["DEBUG = True", f'AWS = "{AWS_KEY}"'],
                    }
                ]
            }
        },
    )
    assert r.status_code == 200, r.text
    lines = r.json()["data"]["settings.py"]
    assert lines[0] == "DEBUG = True" and AWS_KEY not in lines[1] and "<REDACTED:" in lines[1]

    await settle(state)
    async with state.sessionmaker() as db:
        meta = await db.get(MetaQuery, qid)
        assert meta is not None and meta.context_id is not None
        context = await db.get(Context, meta.context_id)
        assert context is not None
        truths = (
            (await db.execute(select(GroundTruth).where(GroundTruth.meta_query_id == qid))).scalars().all()
        )
        messages = (
            (await db.execute(select(ChatMessage).where(ChatMessage.chat_id == chat_id))).scalars().all()
        )
    # Stored sealed (no secret, redacted or not, in the raw bytes), and what was sealed was already redacted.
    raw = [context.prefix, *(t.ground_truth for t in truths), *(m.content for m in messages)]
    assert len(raw) == 4 and all(isinstance(b, bytes) and b"return os." not in b for b in raw)
    stored = [opened(context, state.keyring)["prefix"]]
    stored += [
        opened(row, state.keyring)[column]
        for row, column in [*((t, "ground_truth") for t in truths), *((m, "content") for m in messages)]
    ]
    assert "return os." in stored[0]  # type: ignore[operator]
    for text in stored:
        assert text is not None and GITHUB_TOKEN not in text and AWS_KEY not in text
    assert all("<REDACTED:" in text for text in stored[1:3])  # type: ignore[operator]


async def test_paths_file_names_and_stop_sequences_are_redacted_before_storage(api) -> None:
    from db.tables import CompletionQuery, ContextualTelemetry

    client, state = api
    c, _ = await signed_in(client)
    body = P.completion_request([model_id(state, "scripted")])
    secret_path = f"src/{GITHUB_TOKEN}/config.py"
    body["context"]["file_name"] = secret_path
    body["context"]["context_files"] = [secret_path, "src/util.py"]
    body["contextual_telemetry"]["file_path"] = secret_path
    body["stop_sequences"] = [f"# {GITHUB_TOKEN}", "\n\n"]
    r = await c.post("/api/completion/request", json=body)
    assert r.status_code == 200, r.text
    qid = uuid.UUID(r.json()["data"]["meta_query_id"])
    await settle(state)
    async with state.sessionmaker() as db:
        meta = await db.get(MetaQuery, qid)
        assert meta is not None and meta.context_id is not None and meta.contextual_telemetry_id is not None
        ctx = await db.get(Context, meta.context_id)
        contextual = await db.get(ContextualTelemetry, meta.contextual_telemetry_id)
        query = await db.get(CompletionQuery, qid)
    stored = [ctx.file_name, *(ctx.context_files or []), contextual.file_path, *(query.stop_sequences or [])]  # type: ignore[union-attr]
    assert all(GITHUB_TOKEN not in (s or "") for s in stored), stored
    assert ctx.file_name is not None and "<REDACTED:" in ctx.file_name  # type: ignore[union-attr]
    assert "src/util.py" in (ctx.context_files or [])  # type: ignore[union-attr]
    assert "\n\n" in (query.stop_sequences or [])  # type: ignore[union-attr]


async def test_stop_sequences_and_paths_have_bounded_length(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    good = P.completion_request([model_id(state, "scripted")])
    for field, value in [
        ("stop_sequences", ["x" * 257]),
        ("context", {**good["context"], "context_files": ["p" * 4097]}),
        ("context", {**good["context"], "context_files": [f"f{i}.py" for i in range(2001)]}),
    ]:
        r = await c.post("/api/completion/request", json={**good, field: value})
        assert r.status_code == 422, (field, r.text[:200])


async def test_live_context_paths_are_redacted_and_still_found_by_their_names(api) -> None:
    from app.context.live_state import Owner, state_key
    from app.context.retrieval import snippets_for
    from app.identity import tokens

    client, state = api
    c, _ = await signed_in(client)
    secret_path = f"src/{GITHUB_TOKEN}/geometry.py"
    code = ["import math", "", "def circle_area(radius):", "    return math.pi * radius ** 2"]
    update = {"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": code}
    r = await c.post(
        "/api/completion/multi-file-context/update", json={"context_updates": {secret_path: [update]}}
    )
    assert r.status_code == 200, r.text
    assert GITHUB_TOKEN not in r.text
    info = await tokens.resolve_project(state.redis, c.cookies["project_token"])
    assert info is not None
    owner = Owner(info.project_id, info.user_id)
    names = [n.decode() if isinstance(n, bytes) else n for n in await state.redis.hkeys(state_key(owner))]
    assert len(names) == 1 and GITHUB_TOKEN not in names[0] and "<REDACTED:" in names[0], names
    # The IDE names the file by its real path: the snippet is found, under the stored (redacted) path.
    for context_files in ([secret_path], ["*"]):
        snippets = await snippets_for(
            state,
            owner.project_id,
            "main.py",
            "area = circle_area(",
            "",
            context_files,
            4000,
            False,
            user_id=owner.user_id,
        )
        assert [s.path for s in snippets] == names and "circle_area" in snippets[0].text, context_files
    assert (
        await snippets_for(
            state,
            owner.project_id,
            secret_path,
            "circle_area(",
            "",
            ["*"],
            4000,
            False,
            user_id=owner.user_id,
        )
        == []
    )  # the current file is never its own snippet, named by its real path too
    # Two paths that differ only in a secret are refused, not merged.
    other = secret_path.replace(GITHUB_TOKEN, "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2")
    r = await c.post(
        "/api/completion/multi-file-context/update",
        json={"context_updates": {secret_path: [update], other: [update]}},
    )
    assert r.status_code == 422 and GITHUB_TOKEN not in r.text, r.text


# --------------------------------------------------------------------------------------------------
# A private key typed across several multi-file-context edits (issue 13, finding 2): neither the live
# context in Redis, nor the indexed chunks in PostgreSQL, nor the snippets a model gets may hold it.

CONTEXT_URL = "/api/completion/multi-file-context/update"


def _key_lines(seed: int, n: int = 5) -> list[str]:
    import random
    import string

    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + "+/"
    return ["".join(rng.choice(alphabet) for _ in range(64)) for _ in range(n)]


async def _update(c, changes: dict) -> list[str]:  # type: ignore[no-untyped-def]
    r = await c.post(CONTEXT_URL, json={"context_updates": changes})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_a_private_key_typed_across_edits_is_never_stored_or_sent(api) -> None:
    from app.context.live_state import Owner, read_file
    from app.identity import tokens
    from app.workers.context_indexer import ContextIndexer
    from db.tables import ContextChunk
    from tests.utils.asgi_api import minilm

    client, state = api
    c, _ = await signed_in(client)
    body = _key_lines(1)
    edited = _key_lines(2, 1)[0]
    begin, end = "-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"
    head = ["import deploy", "", 'DEPLOY_KEY = """']
    # Scenario 1: the key pasted without its third line, which is then inserted between two lines
    # already redacted.
    first = [*head, begin, *body[:2], *body[3:], end, '"""']
    await _update(
        c, {"deploy/keys.py": [{"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": first}]}
    )
    at = len(head) + 1 + 2
    answered = (
        await _update(
            c,
            {
                "deploy/keys.py": [
                    {"change_type": "insert", "start_line": at, "end_line": at, "new_lines": [body[2]]}
                ]
            },
        )
    )["deploy/keys.py"]
    # Scenario 2: a line inside the (redacted) block edited.
    second = [*head, begin, *body, end, '"""']
    await _update(
        c,
        {
            "deploy/other_keys.py": [
                {"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": second}
            ]
        },
    )
    line = len(head) + 1 + 1
    answered_2 = (
        await _update(
            c,
            {
                "deploy/other_keys.py": [
                    {"change_type": "update", "start_line": line, "end_line": line + 1, "new_lines": [edited]}
                ]
            },
        )
    )["deploy/other_keys.py"]

    material = {*body, edited}
    assert not material & set(answered) and not material & set(answered_2)
    info = await tokens.resolve_project(state.redis, c.cookies["project_token"])
    assert info is not None
    owner = Owner(info.project_id, info.user_id)
    for path in ("deploy/keys.py", "deploy/other_keys.py"):
        live = await read_file(state.redis, owner, path)
        assert live is not None and begin in live and not material & set(live), path
        assert live.count("<REDACTED:private_key>") == len(body)
    # Consent (the default of signed_in): the files are indexed into PostgreSQL.
    indexer = ContextIndexer(
        state.redis,
        state.sessionmaker,
        _embed(minilm()),
        keyring=state.keyring,
        debounce_s=0,
        max_wait_s=60.0,
    )
    await indexer.run_once(now=time.time() + 3600)
    async with state.sessionmaker() as db:
        rows = (
            (await db.execute(select(ContextChunk).where(ContextChunk.project_id == owner.project_id)))  # type: ignore[arg-type]
            .scalars()
            .all()
        )
    stored = "\n".join(opened(r, state.keyring)["content"] or "" for r in rows)
    assert "DEPLOY_KEY" in stored and "<REDACTED:private_key>" in stored
    assert not any(m in stored for m in material)
    # And a completion that asks for the key file gets snippets of it, redacted.
    sid = model_id(state, "scripted")
    ask = P.completion_request([sid], prefix="from deploy.keys import DEPLOY_KEY\nkey = DEPLOY_KEY")
    ask["context"]["context_files"] = ["*"]
    r = await c.post("/api/completion/request", json=ask)
    assert r.status_code == 200, r.text
    sent = [req for name, req in state.gateway.calls if name == "scripted"][-1]  # type: ignore[attr-defined]
    snippets = "\n".join(s.text for s in sent.context_snippets)
    assert "DEPLOY_KEY" in snippets and not any(m in snippets for m in material)


def _embed(model):  # type: ignore[no-untyped-def]
    async def embed(texts: list[str]) -> list[list[float]]:
        return model.embed(texts)

    return embed
