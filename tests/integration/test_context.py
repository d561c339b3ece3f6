"""Multi-file context on real PostgreSQL (pgvector) and Redis: the update endpoint, the indexer, retrieval."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from app.context.live_state import DIRTY_KEY, Owner, read_file, read_files, state_key
from app.context.retrieval import snippets_for
from app.identity import tokens
from app.infra.encryption import opened
from app.infra.state import AppState
from app.protocol import Snippet
from app.workers.context_indexer import ContextIndexer
from db.tables import ContextChunk
from tests.utils.asgi_api import minilm, signed_in

URL = "/api/completion/multi-file-context/update"

USERS_PY = """import sqlite3


class UserRepository:
    def __init__(self, connection):
        self.connection = connection

    def fetch_user_by_email(self, email):
        row = self.connection.execute("SELECT id, email, name FROM users WHERE email = ?", (email,)).fetchone()
        return dict(row) if row else None

    def delete_user(self, user_id):
        self.connection.execute("DELETE FROM users WHERE id = ?", (user_id,))
""".splitlines()

GEOMETRY_PY = """import math


def circle_area(radius):
    return math.pi * radius ** 2


def hypotenuse(a, b):
    return math.sqrt(a * a + b * b)
""".splitlines()

COLORS_PY = """RED = (255, 0, 0)
GREEN = (0, 255, 0)


def blend(first, second):
    return tuple((x + y) // 2 for x, y in zip(first, second))
""".splitlines()


def insert(lines: list[str], at: int = 0) -> dict[str, Any]:
    return {"change_type": "insert", "start_line": at, "end_line": at, "new_lines": lines}


async def owner_of(c: httpx.AsyncClient, state: AppState) -> Owner:
    info = await tokens.resolve_project(state.redis, c.cookies["project_token"])
    assert info is not None
    return Owner(info.project_id, info.user_id)


async def chunk_rows(state: AppState, project_id: uuid.UUID, path: str | None = None) -> list[ContextChunk]:
    async with state.sessionmaker() as db:
        q = select(ContextChunk).where(ContextChunk.project_id == project_id)  # type: ignore[arg-type]
        if path is not None:
            q = q.where(ContextChunk.file_path == path)  # type: ignore[arg-type]
        return list(
            (await db.execute(q.order_by(ContextChunk.file_path, ContextChunk.chunk_index))).scalars()
        )


class CountingEmbed:
    """The real MiniLM, counting calls and texts."""

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.texts += len(texts)
        return minilm().embed(texts)


def indexer(state: AppState, embed: CountingEmbed | None = None, debounce_s: float = 5.0) -> ContextIndexer:
    return ContextIndexer(
        state.redis,
        state.sessionmaker,
        embed or CountingEmbed(),
        keyring=state.keyring,
        debounce_s=debounce_s,
        max_wait_s=60.0,
    )


async def index_now(state: AppState, embed: CountingEmbed | None = None):  # type: ignore[no-untyped-def]
    """Run the indexer as if the debounce window had passed."""
    return await indexer(state, embed).run_once(now=time.time() + 3600)


# ---------------------------------------------------------------- the endpoint


async def test_update_answers_lines_per_file_and_keeps_them_strings(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    r = await c.post(
        URL, json={"context_updates": {"src/a.py": [insert(["42", "null", "true", "[1]", '"x"'])]}}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "message": "Multi-file context updated successfully.",
        "data": {"src/a.py": ["42", "null", "true", "[1]", '"x"']},
    }
    owner = await owner_of(c, state)
    assert await read_file(state.redis, owner, "src/a.py") == ["42", "null", "true", "[1]", '"x"']
    # A second request edits that state; changes apply bottom up in old-file coordinates.
    body = {
        "context_updates": {
            "other.py": [],  # a file with no changes is answered as it is (here: absent, so empty)
            "src/a.py": [
                {"change_type": "update", "start_line": 0, "end_line": 1, "new_lines": ["0"]},
                {"change_type": "remove", "start_line": 2, "end_line": 4, "new_lines": []},
                insert(["end"], at=5),
            ],
        }
    }
    r = await c.post(URL + "/", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"other.py": [], "src/a.py": ["0", "null", '"x"', "end"]}


async def test_non_string_lines_are_refused(api) -> None:
    client, _ = api
    c, _ = await signed_in(client)
    for bad in (42, None, True):
        r = await c.post(URL, json={"context_updates": {"a.py": [insert(["ok", bad])]}})  # type: ignore[list-item]
        assert r.status_code == 422, r.text
        assert "new_lines" in r.json()["message"]


async def test_bad_ranges_are_refused_and_nothing_is_applied(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    owner = await owner_of(c, state)
    assert (
        await c.post(URL, json={"context_updates": {"keep.py": [insert(["a", "b", "c"])]}})
    ).status_code == 200
    cases = [
        ({"change_type": "update", "start_line": 3, "end_line": 1, "new_lines": ["x"]}, "before start_line"),
        ({"change_type": "remove", "start_line": -1, "end_line": 1, "new_lines": []}, "start_line"),
        ({"change_type": "rename", "start_line": 0, "end_line": 1, "new_lines": []}, "change_type"),
    ]
    for bad, words in cases:
        body = {"context_updates": {"new.py": [insert(["fresh"])], "keep.py": [bad]}}
        r = await c.post(URL, json=body)
        assert r.status_code == 422, r.text
        assert words in r.json()["message"]
    overlapping = [
        {"change_type": "update", "start_line": 0, "end_line": 2, "new_lines": ["x"]},
        {"change_type": "remove", "start_line": 1, "end_line": 3, "new_lines": []},
    ]
    r = await c.post(URL, json={"context_updates": {"new.py": [insert(["fresh"])], "keep.py": overlapping}})
    assert r.status_code == 422 and "overlap" in r.json()["message"] and "keep.py" in r.json()["message"]
    r = await c.post(URL, json={"context_updates": {"*": [insert(["x"])]}})
    assert r.status_code == 422
    assert await read_files(state.redis, owner) == {"keep.py": ["a", "b", "c"]}


async def test_size_limits(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    limit = state.settings.max_context_chars
    r = await c.post(URL, json={"context_updates": {"big.py": [insert(["x" * (limit + 1)])]}})
    assert r.status_code == 413 and "limit" in r.json()["message"]
    # A line number far past the limit is refused before any padding is allocated.
    r = await c.post(URL, json={"context_updates": {"far.py": [insert(["x"], at=10**12)]}})
    assert r.status_code in (413, 422)
    assert await read_files(state.redis, await owner_of(c, state)) == {}


async def test_unauthenticated_update_is_refused(api) -> None:
    client, _ = api
    r = await client.post(URL, json={"context_updates": {}})
    assert r.status_code == 401


# ---------------------------------------------------------------- consent


async def test_without_consent_nothing_reaches_postgres_and_state_dies_with_the_session(api) -> None:
    client, state = api
    c, _ = await signed_in(client, preference={"store_context": False})
    owner = await owner_of(c, state)
    r = await c.post(URL, json={"context_updates": {"db/users.py": [insert(USERS_PY)]}})
    assert r.status_code == 200
    session_token = c.cookies["session_token"]
    ttl = await state.redis.pttl(state_key(owner))
    # At most as long as the session can live (it slides on use up to its cap); the session's end drops it.
    assert (
        0 < ttl <= await tokens.session_lifetime_left_ms(state.redis, tokens.digest(session_token), 0) + 1000
    )
    assert await state.redis.zscore(DIRTY_KEY, f"{owner.project_id}:{owner.user_id}:db/users.py") is None
    await index_now(state)
    assert await chunk_rows(state, owner.project_id) == []
    # Retrieval works from Redis alone.
    snippets = await snippets_for(
        state,
        owner.project_id,
        "app.py",
        "repo = UserRepository(conn)\nuser = repo.fetch_user_by_email(",
        "",
        ["*"],
        2000,
        False,
        user_id=owner.user_id,
    )
    assert snippets and snippets[0].path == "db/users.py" and "fetch_user_by_email" in snippets[0].text
    # Deactivating the session (its one holder) ends it, and the live state without consent with it.
    assert (await c.put("/api/session/deactivate")).status_code == 200
    assert await read_files(state.redis, owner) == {}


# ---------------------------------------------------------------- the indexer


async def test_indexer_debounces_upserts_and_removes_stale_chunks(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    owner = await owner_of(c, state)
    embed = CountingEmbed()
    idx = indexer(state, embed, debounce_s=5.0)
    # Many edits in a short window ...
    lines: list[str] = []
    for i in range(6):
        r = await c.post(URL, json={"context_updates": {"pkg/geometry.py": [insert([GEOMETRY_PY[i]], at=i)]}})
        assert r.status_code == 200
        lines.append(GEOMETRY_PY[i])
    r = await c.post(URL, json={"context_updates": {"pkg/geometry.py": [insert(GEOMETRY_PY[6:], at=6)]}})
    assert r.json()["data"]["pkg/geometry.py"] == GEOMETRY_PY
    # ... are not indexed while the window is open ...
    stats = await idx.run_once(now=time.time())
    assert stats.files == 0 and await chunk_rows(state, owner.project_id) == []
    # ... and cost one re-index once it has passed.
    stats = await idx.run_once(now=time.time() + 6)
    assert stats.files == 1 and embed.calls == 1
    rows = await chunk_rows(state, owner.project_id, "pkg/geometry.py")
    assert rows and all(r.embedding is not None and r.lexemes for r in rows)
    assert "circle_area" in "\n".join(opened(r, state.keyring)["content"] or "" for r in rows)
    assert (await idx.run_once(now=time.time() + 60)).files == 0  # nothing left marked

    # A long file, then an edit at its end: the untouched chunks keep their rows and are not re-embedded.
    long_file = [f"def function_{i}(x):\n    return x + {i}\n" for i in range(40)]
    long_lines = "\n".join(long_file).split("\n")
    await c.post(URL, json={"context_updates": {"pkg/many.py": [insert(long_lines)]}})
    await idx.run_once(now=time.time() + 6)
    before = {
        r.chunk_index: (r.chunk_id, r.content_hash)
        for r in await chunk_rows(state, owner.project_id, "pkg/many.py")
    }
    assert len(before) >= 3
    embedded_before = embed.texts
    n = len(long_lines)
    await c.post(
        URL,
        json={
            "context_updates": {
                "pkg/many.py": [
                    {
                        "change_type": "update",
                        "start_line": n - 3,
                        "end_line": n,
                        "new_lines": ["def last():", "    return None"],
                    }
                ]
            }
        },
    )
    stats = await idx.run_once(now=time.time() + 6)
    assert stats.files == 1 and 1 <= embed.texts - embedded_before < len(before)
    after = {
        r.chunk_index: (r.chunk_id, r.content_hash)
        for r in await chunk_rows(state, owner.project_id, "pkg/many.py")
    }
    assert sum(before[i] == after.get(i) for i in before) >= len(before) - 2

    # Shrinking the file removes the chunks past its new end.
    await c.post(
        URL,
        json={
            "context_updates": {
                "pkg/many.py": [{"change_type": "remove", "start_line": 10, "end_line": n, "new_lines": []}]
            }
        },
    )
    stats = await idx.run_once(now=time.time() + 6)
    assert stats.deleted >= 1
    rows = await chunk_rows(state, owner.project_id, "pkg/many.py")
    assert rows and max(r.end_line for r in rows) <= 10

    # A file emptied entirely leaves no chunks.
    await c.post(
        URL,
        json={
            "context_updates": {
                "pkg/many.py": [{"change_type": "remove", "start_line": 0, "end_line": 10, "new_lines": []}]
            }
        },
    )
    await idx.run_once(now=time.time() + 6)
    assert await chunk_rows(state, owner.project_id, "pkg/many.py") == []
    assert await read_file(state.redis, owner, "pkg/many.py") is None
    assert await chunk_rows(state, owner.project_id, "pkg/geometry.py")  # the other file is untouched


async def test_indexer_max_wait_indexes_a_file_that_keeps_changing(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    owner = await owner_of(c, state)
    idx = ContextIndexer(
        state.redis,
        state.sessionmaker,
        CountingEmbed(),
        keyring=state.keyring,
        debounce_s=5.0,
        max_wait_s=20.0,
    )
    await c.post(URL, json={"context_updates": {"busy.py": [insert(COLORS_PY)]}})
    # Still being edited (last change "now"), but the first unindexed change is 25 s old.
    await c.post(URL, json={"context_updates": {"busy.py": [insert(["# more"], at=len(COLORS_PY))]}})
    assert (await idx.run_once(now=time.time() + 1)).files == 0
    assert (await idx.run_once(now=time.time() + 25)).files >= 1
    assert await chunk_rows(state, owner.project_id, "busy.py")


async def test_a_failed_embedding_keeps_the_file_marked(api) -> None:
    client, state = api
    c, _ = await signed_in(client)
    owner = await owner_of(c, state)
    await c.post(URL, json={"context_updates": {"flaky.py": [insert(COLORS_PY)]}})

    async def broken(texts: list[str]) -> list[list[float]]:
        raise RuntimeError("embedder down")

    stats = await ContextIndexer(
        state.redis, state.sessionmaker, broken, keyring=state.keyring, debounce_s=0
    ).run_once(now=time.time() + 1)
    assert stats.failed >= 1
    assert await state.redis.zscore(DIRTY_KEY, f"{owner.project_id}:{owner.user_id}:flaky.py") is not None
    await index_now(state)
    assert await chunk_rows(state, owner.project_id, "flaky.py")


# ---------------------------------------------------------------- retrieval


async def _project_with_three_files(api) -> tuple[AppState, Owner]:  # type: ignore[no-untyped-def]
    client, state = api
    c, _ = await signed_in(client)
    owner = await owner_of(c, state)
    files = {"db/users.py": USERS_PY, "pkg/geometry.py": GEOMETRY_PY, "pkg/colors.py": COLORS_PY}
    r = await c.post(URL, json={"context_updates": {p: [insert(lines)] for p, lines in files.items()}})
    assert r.status_code == 200
    await index_now(state)
    return state, owner


QUERY_PREFIX = "def send_welcome(repository, address):\n    user = repository.fetch_user_by_email("
QUERY_SUFFIX = ")\n    return user\n"


async def test_retrieval_puts_the_relevant_file_first(api) -> None:
    state, owner = await _project_with_three_files(api)
    async with state.sessionmaker() as db:
        total = (
            await db.execute(
                select(func.count())
                .select_from(ContextChunk)
                .where(ContextChunk.project_id == owner.project_id)
            )
        ).scalar_one()  # type: ignore[arg-type]
    assert total >= 3
    for consent in (True, False):
        snippets = await snippets_for(
            state,
            owner.project_id,
            "app/main.py",
            QUERY_PREFIX,
            QUERY_SUFFIX,
            ["*"],
            4000,
            consent,
            user_id=owner.user_id,
        )
        assert snippets[0].path == "db/users.py", (consent, [s.path for s in snippets])
        assert "def fetch_user_by_email" in snippets[0].text
    # Geometry by meaning and words.
    snippets = await snippets_for(
        state,
        owner.project_id,
        "app/main.py",
        "def area_of_disk(r):\n    return circle_area(",
        "",
        None,
        4000,
        True,
    )
    assert snippets[0].path == "pkg/geometry.py"


async def test_retrieval_respects_budget_context_files_and_current_file(api) -> None:
    state, owner = await _project_with_three_files(api)
    for budget in (4000, 300, 120, 0):
        snippets = await snippets_for(
            state, owner.project_id, "x.py", QUERY_PREFIX, QUERY_SUFFIX, ["*"], budget, True
        )
        assert sum(len(s.text) for s in snippets) <= budget
        assert all(isinstance(s, Snippet) and s.text.strip() for s in snippets)
    # Only the listed files, never the current one, nothing for [].
    only = await snippets_for(
        state, owner.project_id, "x.py", QUERY_PREFIX, QUERY_SUFFIX, ["pkg/colors.py"], 4000, True
    )
    assert {s.path for s in only} <= {"pkg/colors.py"}
    current = await snippets_for(
        state, owner.project_id, "db/users.py", QUERY_PREFIX, QUERY_SUFFIX, ["*"], 4000, True
    )
    assert all(s.path != "db/users.py" for s in current)
    absolute = await snippets_for(
        state, owner.project_id, "/home/me/proj/db/users.py", QUERY_PREFIX, QUERY_SUFFIX, ["*"], 4000, True
    )
    assert all(s.path != "db/users.py" for s in absolute)
    assert (
        await snippets_for(state, owner.project_id, "x.py", QUERY_PREFIX, QUERY_SUFFIX, [], 4000, True) == []
    )
    # Another project sees none of these files.
    assert (
        await snippets_for(state, uuid.uuid4(), "x.py", QUERY_PREFIX, QUERY_SUFFIX, ["*"], 4000, True) == []
    )


async def test_withdrawn_consent_forgets_the_users_indexed_chunks(api) -> None:
    from app.context.consent import forget_context_of_user

    client, state = api
    c, _ = await signed_in(client)
    owner = await owner_of(c, state)
    await c.post(URL, json={"context_updates": {"pkg/colors.py": [insert(COLORS_PY)]}})
    await index_now(state)
    assert await chunk_rows(state, owner.project_id)
    async with state.sessionmaker() as db:
        assert await forget_context_of_user(db, owner.user_id) >= 1
        await db.commit()
    assert await chunk_rows(state, owner.project_id) == []
