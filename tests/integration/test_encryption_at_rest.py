"""Encryption at rest on the real PostgreSQL and Redis: no stored code in clear, the API still answers it,
migration 0010 of rows stored before, and key rotation by `code4me rekey` while the platform reads both keys."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from pydantic import SecretStr

from app.context.retrieval import _lexical_ranking, snippets_for
from app.identity import tokens
from app.infra.encryption import context_aad
from app.infra.envelope import VERSION_AES_GCM, DecryptionError, new_key_spec, sealed_key_id
from app.infra.state import AppState
from app.workers.context_indexer import ContextIndexer
from app.workers.rekey import Rekeyer, rekey
from db.engine import plain_url
from db.migrate import upgrade_async
from serve.embedded import ServiceUrls
from tests.utils import payloads as P
from tests.utils.asgi_api import api_settings, model_id, running_api, settle, signed_in

CONTEXT_URL = "/api/completion/multi-file-context/update"
# Every stored value of these columns must be sealed (app/infra/encryption.py).
SEALED_SQL = {
    "context": "SELECT prefix, suffix, selected_text FROM context",
    "chat_message": "SELECT content FROM chat_message",
    "ground_truth": "SELECT ground_truth FROM ground_truth",
    "context_chunk": "SELECT content FROM context_chunk",
    "had_generation": "SELECT completion FROM had_generation",
    "chat": "SELECT title FROM chat",
}
# The same columns of one user's rows ($1: the user, $2: the project): other modules' rows of the shared
# database may be sealed by other keyrings (each Ray stack's data directory has its own development key).
USER_SEALED_SQL = {
    "context": "SELECT c.prefix, c.suffix, c.selected_text FROM context c"
    " JOIN meta_query m ON m.context_id = c.context_id WHERE m.user_id = $1 AND $2::uuid IS NOT NULL",
    "chat_message": "SELECT cm.content FROM chat_message cm JOIN chat ch ON ch.chat_id = cm.chat_id"
    " WHERE ch.user_id = $1 AND $2::uuid IS NOT NULL",
    "ground_truth": "SELECT g.ground_truth FROM ground_truth g"
    " JOIN meta_query m ON m.meta_query_id = g.meta_query_id WHERE m.user_id = $1 AND $2::uuid IS NOT NULL",
    "context_chunk": "SELECT content FROM context_chunk WHERE project_id = $2 AND $1::uuid IS NOT NULL",
    "had_generation": "SELECT h.completion FROM had_generation h"
    " JOIN meta_query m ON m.meta_query_id = h.meta_query_id WHERE m.user_id = $1 AND $2::uuid IS NOT NULL",
    "chat": "SELECT title FROM chat WHERE user_id = $1 AND $2::uuid IS NOT NULL",
}


def marker() -> str:
    """An identifier no other test stores."""
    return f"zebra_{uuid.uuid4().hex[:10]}"


def question(word: str) -> str:
    """The chat message of `store_everything` (its first line is the chat's title)."""
    return f"About {word}_reader.\nWhat does it do?"


def unit_vector(texts: list[str]) -> list[list[float]]:
    return [[1.0] + [0.0] * 383 for _ in texts]


async def fake_embed(texts: list[str]) -> list[list[float]]:
    """Chunks are found lexically here: the same vector for every text, no model to load."""
    return unit_vector(texts)


async def store_everything(state: AppState, c: httpx.AsyncClient, word: str) -> dict[str, Any]:
    """A completion with context and a ground truth, a chat turn, and an indexed project file, all naming `word`."""
    ids = [model_id(state, "scripted")]
    body = P.completion_request(
        ids, prefix=f"def {word}_reader(path):\n    return ", suffix=f"  # {word} end\n"
    )
    body["context"]["selected_text"] = f"{word}_selected"
    r = await c.post("/api/completion/request", json=body)
    assert r.status_code == 200, r.text
    qid = r.json()["data"]["meta_query_id"]
    r = await c.post(
        "/api/completion/feedback",
        json={
            "meta_query_id": qid,
            "model_id": ids[0],
            "was_accepted": True,
            "ground_truth": f"{word}_truth()",
        },
    )
    assert r.status_code == 200, r.text
    chat_id = uuid.uuid4()
    r = await c.post(
        "/api/chat/request",
        json={
            "model_ids": [model_id(state, "chatty")],
            "chat_id": str(chat_id),
            "messages": [["user", question(word)]],
            "context": {
                "prefix": "",
                "suffix": "",
                "file_name": "x.py",
                "selected_text": "",
                "context_files": [],
            },
            "contextual_telemetry": {"version_id": 1, "trigger_type_id": 1, "language_id": 1},
            "behavioral_telemetry": {},
            "web_enabled": False,
        },
    )
    assert r.status_code == 200, r.text
    lines = [f"def {word}_helper(x):", f"    return x + 1  # {word}", "", "CONSTANT = 3"]
    change = {"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": lines}
    r = await c.post(CONTEXT_URL, json={"context_updates": {f"pkg/{word}.py": [change]}})
    assert r.status_code == 200, r.text
    indexer = ContextIndexer(state.redis, state.sessionmaker, fake_embed, keyring=state.keyring, debounce_s=0)
    assert (await indexer.run_once(now=time.time() + 3600)).written >= 1
    await settle(state)
    project = (await c.get("/api/project/list")).json()
    return {"qid": qid, "chat_id": chat_id, "file": f"pkg/{word}.py", "projects": project}


async def raw_values(
    database_url: str, owner: tuple[uuid.UUID, uuid.UUID] | None = None
) -> dict[str, list[bytes]]:
    """Every non-null value of every sealed column, as PostgreSQL holds it (of `owner`'s rows: user, project)."""
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        queries = SEALED_SQL if owner is None else USER_SEALED_SQL
        return {
            table: [
                bytes(v) for r in await conn.fetch(sql, *(owner or ())) for v in r.values() if v is not None
            ]
            for table, sql in queries.items()
        }
    finally:
        await conn.close()


async def project_of(state: AppState, c: httpx.AsyncClient) -> uuid.UUID:
    from app.identity import tokens

    info = await tokens.resolve_project(state.redis, c.cookies["project_token"])
    assert info is not None
    return info.project_id


async def found_lexically(state: AppState, project_id: uuid.UUID, term: str) -> list[str]:
    """The file paths the lexical ranking alone finds for one identifier (the stored lexemes are keyed hashes)."""
    params = {"project_id": project_id, "current": "elsewhere.py", "k": 24}
    return [r.file_path for r in await _lexical_ranking(state, params, False, [term])]


async def reads_back(state: AppState, c: httpx.AsyncClient, word: str, stored: dict[str, Any]) -> None:
    """The API answers everything stored about `word` in clear: export, chat history, retrieval."""
    export = (await c.get("/api/user/export")).json()
    (query,) = [q for q in export["queries"] if q["meta_query_id"] == stored["qid"]]
    assert query["context"]["prefix"] == f"def {word}_reader(path):\n    return "
    assert query["context"]["suffix"] == f"  # {word} end\n"
    assert query["context"]["selected_text"] == f"{word}_selected"
    assert [t["ground_truth"] for t in query["ground_truths"]] == [f"{word}_truth()"]
    assert [g["completion"] for g in query["generations"]] == ["read()"]  # the scripted model's answer
    (chat,) = [ch for ch in export["chats"] if ch["chat_id"] == str(stored["chat_id"])]
    assert chat["messages"][0]["content"] == question(word)
    assert chat["title"] == f"About {word}_reader."
    page = (await c.get("/api/chat/get/0")).json()
    (listed,) = [h for h in page["items"] if h["chat_id"] == str(stored["chat_id"])]
    assert listed["title"] == f"About {word}_reader."
    assert listed["history"][0]["user_message"]["content"] == question(word)
    (answer,) = listed["history"][0]["assistant_responses"]
    assert answer["completion"] == "You asked: " + question(word)[:40]  # quotes the user
    project_id = await project_of(state, c)
    assert await found_lexically(state, project_id, f"{word}_helper") == [stored["file"]]
    snippets = await snippets_for(
        state, project_id, "main.py", f"{word}_helper(", ")\n", ["*"], 4000, True, user_id=None
    )
    assert [s.path for s in snippets] == [stored["file"]] and f"def {word}_helper(x):" in snippets[0].text


async def test_stored_code_is_sealed_and_the_api_still_answers_it(api, services: ServiceUrls) -> None:
    client, state = api
    c, _ = await signed_in(client)
    word = marker()
    stored = await store_everything(state, c, word)

    raw = await raw_values(services.database_url)
    everything = b"".join(v for values in raw.values() for v in values)
    assert word.encode() not in everything  # in no row of any sealed column, of any user
    primary = state.keyring.primary.key_id
    user_id = (await tokens.resolve_project(state.redis, c.cookies["project_token"])).user_id  # type: ignore[union-attr]
    own = await raw_values(services.database_url, (user_id, await project_of(state, c)))
    for table, values in own.items():
        assert values, table
        assert all(v[0] == VERSION_AES_GCM and sealed_key_id(v) == primary for v in values), table
    # The chunk's index columns do not give the code away either: lexemes and content hash are keyed.
    conn = await asyncpg.connect(plain_url(services.database_url))
    try:
        chunk = await conn.fetchrow(
            "SELECT lexemes::text AS lexemes, content_hash FROM context_chunk WHERE file_path = $1",
            stored["file"],
        )
    finally:
        await conn.close()
    assert chunk is not None and word not in chunk["lexemes"] and "helper" not in chunk["lexemes"]
    assert re.fullmatch(r"('[0-9a-f]{20}':[0-9,]+ ?)+", chunk["lexemes"])
    text = f"def {word}_helper(x):\n    return x + 1  # {word}\n\nCONSTANT = 3"
    assert chunk["content_hash"] != hashlib.sha256(text.encode()).hexdigest()

    await reads_back(state, c, word, stored)


async def test_a_ciphertext_moved_to_another_row_does_not_open(api, services: ServiceUrls) -> None:
    client, state = api
    c, _ = await signed_in(client)
    first = await store_everything(state, c, marker())
    second = await store_everything(state, c, marker())
    conn = await asyncpg.connect(plain_url(services.database_url))
    try:
        ids = [
            await conn.fetchval(
                "SELECT context_id FROM meta_query WHERE meta_query_id = $1", uuid.UUID(s["qid"])
            )
            for s in (first, second)
        ]
        # Someone with write access to the database copies the first query's prefix over the second's.
        await conn.execute(
            "UPDATE context SET prefix = (SELECT prefix FROM context WHERE context_id = $1) WHERE context_id = $2",
            *ids,
        )
        moved = await conn.fetchval("SELECT prefix FROM context WHERE context_id = $1", ids[1])
    finally:
        await conn.close()
    assert state.keyring.open(moved, context_aad("prefix", ids[0])).startswith(
        "def zebra_"
    )  # the first's code
    with pytest.raises(DecryptionError):
        state.keyring.open(moved, context_aad("prefix", ids[1]))  # never readable as the second's


# ---------------------------------------------------------------- migration 0010 and rotation


@pytest.fixture
async def own_database(services: ServiceUrls) -> AsyncIterator[str]:
    """A database of the test's own, migrated to 0009: `code4me rekey` rewrites every row of a database."""
    name = f"rekey_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(plain_url(services.database_url))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = re.sub(r"@/[^?]+", f"@/{name}", services.database_url, count=1)
    await upgrade_async(url, "0009")
    yield url
    admin = await asyncpg.connect(plain_url(services.database_url))
    try:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


def private_redis(url: str) -> str:
    """Redis database 7: this module's private apps must not share the telemetry stream with the `api` fixture."""
    return url.replace("?db=0", "?db=7") if "?db=0" in url else url.rstrip("/") + "/7"


async def test_migration_then_rotation_without_downtime(
    own_database: str, services: ServiceUrls, data_dir
) -> None:
    # Rows stored before encryption existed (schema 0009: text columns, lexemes in clear).
    legacy = marker()
    conn = await asyncpg.connect(plain_url(own_database))
    try:
        project_id = uuid.uuid4()
        await conn.execute("INSERT INTO project (project_id, project_name) VALUES ($1, 'legacy')", project_id)
        legacy_context = uuid.uuid4()
        await conn.execute(
            "INSERT INTO context (context_id, prefix, suffix) VALUES ($1, $2, '')",
            legacy_context,
            f"old_{legacy} = 1",
        )
        await conn.execute(
            "INSERT INTO context_chunk (project_id, file_path, chunk_index, start_line, end_line, content,"
            " content_hash, embedding, lexemes) VALUES ($1, 'legacy.py', 0, 0, 1, $2, $3, $4,"
            " to_tsvector('simple', $2))",
            project_id,
            f"def {legacy}_legacy(): pass",
            "0" * 64,
            "[" + ",".join(["1"] + ["0"] * 383) + "]",
        )
    finally:
        await conn.close()
    await upgrade_async(own_database)
    values = await raw_values(own_database)
    assert values["context"] and all(v[0] == 0 for v in values["context"])  # version 0: stored before
    conn = await asyncpg.connect(plain_url(own_database))
    try:  # identifiers in clear are gone from the index: the chunk is found by its embedding until rekeyed
        assert (
            await conn.fetchval("SELECT lexemes FROM context_chunk WHERE project_id = $1", project_id) is None
        )
    finally:
        await conn.close()
    old_spec, new_spec = new_key_spec("old"), new_key_spec("new")
    redis_url = private_redis(services.redis_url)

    # The platform runs under the old key; users store code.
    settings = api_settings(data_dir, encryption_keys=SecretStr(old_spec))
    async with running_api(own_database, redis_url, settings) as (client, state):
        c, _ = await signed_in(client)
        word = marker()
        stored = await store_everything(state, c, word)
        cookies = dict(c.cookies)

    # Rotation, step 1: every process gets new first, old second. Old rows still read, new rows go under new.
    rotating = api_settings(data_dir, encryption_keys=SecretStr(f"{new_spec},{old_spec}"))
    async with running_api(own_database, redis_url, rotating) as (client, state):
        c = httpx.AsyncClient(transport=client._transport, base_url="http://test", cookies=cookies)
        await reads_back(state, c, word, stored)
        assert await found_lexically(state, project_id, f"{legacy}_legacy") == []  # not rekeyed yet
        # Step 2, while it runs: re-encrypt, in a bounded slice first (as an interrupted pass would leave it) ...
        job = Rekeyer(own_database, state.keyring, batch_size=2, max_batches=1)
        await job.run()
        left = await job.remaining()
        assert 0 < sum(left.values())
        await reads_back(state, c, word, stored)  # half-rotated: both keys read
        # ... then a full pass finishes it, legacy plaintext rows included.
        report, remaining = await rekey(own_database, state.keyring, batch_size=2)
        assert remaining == 0 and "older keys can be dropped" in report
        again = await Rekeyer(own_database, state.keyring).run()
        assert sum(t.values for t in again) == 0  # nothing left to do: a second pass rewrites nothing

    values = await raw_values(own_database)
    everything = b"".join(v for vs in values.values() for v in vs)
    assert word.encode() not in everything and legacy.encode() not in everything
    assert all(sealed_key_id(v) == "new" for vs in values.values() for v in vs)

    # Step 3: the old key is dropped; everything, the legacy rows too, still reads.
    only_new = api_settings(data_dir, encryption_keys=SecretStr(new_spec))
    async with running_api(own_database, redis_url, only_new) as (client, state):
        assert state.keyring.key_ids == ("new",)
        c = httpx.AsyncClient(transport=client._transport, base_url="http://test", cookies=cookies)
        await reads_back(state, c, word, stored)
        assert await found_lexically(state, project_id, f"{legacy}_legacy") == ["legacy.py"]
        conn = await asyncpg.connect(plain_url(own_database))
        try:
            sealed = await conn.fetchval("SELECT prefix FROM context WHERE context_id = $1", legacy_context)
        finally:
            await conn.close()
        assert state.keyring.open(sealed, context_aad("prefix", legacy_context)) == f"old_{legacy} = 1"


async def test_rekey_leaves_a_value_written_meanwhile_alone(own_database: str, data_dir) -> None:
    """A chunk the indexer rewrites between the pass's read and its write keeps the indexer's value."""
    from app.infra.encryption import CONTEXT_CHUNK, chunk_aad
    from app.infra.envelope import Keyring
    from app.workers import rekey as job

    await upgrade_async(own_database)
    old, new = Keyring.parse(new_key_spec("old2")), Keyring.parse(new_key_spec("new2"))
    rotating = Keyring(new.keys + old.keys)
    project_id = uuid.uuid4()
    conn = await asyncpg.connect(plain_url(own_database))
    try:
        await conn.execute("INSERT INTO project (project_id, project_name) VALUES ($1, 'race')", project_id)
        for i in range(2):
            await conn.execute(
                "INSERT INTO context_chunk (project_id, file_path, chunk_index, start_line, end_line, content,"
                " content_hash) VALUES ($1, 'race.py', $2, 0, 1, $3, 'x')",
                project_id,
                i,
                old.seal(f"chunk {i}", chunk_aad(project_id, i, "race.py")),
            )
        rekeyer = Rekeyer(own_database, rotating)
        rows = await conn.fetch(job._select_sql(CONTEXT_CHUNK), b"new2", 100, True, None)
        rows = [r for r in rows if r["project_id"] == project_id]
        args, _values = rekeyer._reseal(CONTEXT_CHUNK, rows, rotating.sealer())
        # Meanwhile the indexer writes chunk 0 anew (under the new key already).
        fresh = rotating.seal("chunk 0, edited", chunk_aad(project_id, 0, "race.py"))
        await conn.execute(
            "UPDATE context_chunk SET content = $1 WHERE project_id = $2 AND chunk_index = 0",
            fresh,
            project_id,
        )
        assert await conn.execute(job._update_sql(CONTEXT_CHUNK), *args) == "UPDATE 1"  # chunk 1 only
        stored = {
            r["chunk_index"]: bytes(r["content"])
            for r in await conn.fetch(
                "SELECT chunk_index, content FROM context_chunk WHERE project_id = $1", project_id
            )
        }
    finally:
        await conn.close()
    assert stored[0] == fresh  # the indexer's value, not the pass's re-encryption of the old one
    assert sealed_key_id(stored[1]) == "new2"
    assert new.open(stored[1], chunk_aad(project_id, 1, "race.py")) == "chunk 1"
