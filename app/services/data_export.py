"""Everything stored about a user, as one JSON document written incrementally (GDPR access/portability).

The document is read in pages (keyset pagination, PAGE rows at a time), so memory stays flat however
many queries a user has. Each page is read in its own short read-only transaction on a pool connection
that goes back before the page is sent: a client that reads slowly, or not at all, holds no database
connection (the route also cuts off a stalled reader, app/api/streaming.py). Every row that exists for
the whole export appears exactly once, in order; a row written or deleted meanwhile may or may not be in
it. Shared project contents (indexed file chunks, the project's multi-file context) belong to the
project's members together and are not part of one user's export.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel, col

from app.infra.encryption import opened
from app.infra.envelope import Keyring
from app.services import audit
from app.services.audit import AuditAction
from db.tables import (
    ApiToken,
    BehavioralTelemetry,
    Chat,
    ChatMessage,
    ChatQuery,
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
    SessionProject,
    StudyAssignment,
    User,
)

FORMAT = "code4me-export/1"
PAGE = 500
# Never exported: a hash is not the user's data, and it would only help someone who steals the file.
HIDDEN_USER_FIELDS = {"password_hash"}


async def record_export(db: AsyncSession, user_id: uuid.UUID, *, address: str) -> None:
    """Audit an export as it starts, committed before the first byte (the stream has no transaction of its own
    that the record could join)."""
    await audit.record(
        db, AuditAction.USER_EXPORT, actor=user_id, address=address, target=audit.user_target(user_id)
    )
    await db.commit()


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def row(obj: SQLModel, exclude: set[str] | None = None, keyring: Keyring | None = None) -> dict[str, Any]:
    """A table row as JSON-ready data; sealed columns (code, messages, ground truths) opened with `keyring`."""
    texts = opened(obj, keyring) if keyring is not None else {}
    data = obj.model_dump(mode="json", exclude=(exclude or set()) | set(texts))
    if not texts:
        return data
    return {
        name: texts.get(name, data.get(name))
        for name in type(obj).model_fields
        if name in data or name in texts
    }


async def _all(db: AsyncSession, stmt: Any) -> list[Any]:
    return list((await db.execute(stmt)).scalars())


async def _by_ids(
    db: AsyncSession, table: type[SQLModel], key: Any, ids: Iterable[Any], keyring: Keyring | None = None
) -> dict[Any, dict]:
    wanted = [i for i in set(ids) if i is not None]
    if not wanted:
        return {}
    rows = await _all(db, select(table).where(key.in_(wanted)))
    return {getattr(r, key.key): row(r, keyring=keyring) for r in rows}


async def _grouped(
    db: AsyncSession,
    table: type[SQLModel],
    key: Any,
    ids: list[Any],
    order: Any,
    keyring: Keyring | None = None,
) -> dict[Any, list]:
    out: dict[Any, list] = defaultdict(list)
    if ids:
        for r in await _all(db, select(table).where(key.in_(ids)).order_by(order)):
            out[getattr(r, key.key)].append(row(r, keyring=keyring))
    return out


async def _query_page(
    db: AsyncSession, metas: list[MetaQuery], model_names: dict[int, str], keyring: Keyring
) -> list[dict]:
    """One page of meta queries with everything hanging off them, fetched in a few bulk reads."""
    ids = [m.meta_query_id for m in metas]
    contexts = await _by_ids(db, Context, Context.context_id, (m.context_id for m in metas), keyring)
    contextual = await _by_ids(
        db,
        ContextualTelemetry,
        ContextualTelemetry.contextual_telemetry_id,
        (m.contextual_telemetry_id for m in metas),
    )
    behavioral = await _by_ids(
        db,
        BehavioralTelemetry,
        BehavioralTelemetry.behavioral_telemetry_id,
        (m.behavioral_telemetry_id for m in metas),
    )
    completions = await _by_ids(db, CompletionQuery, CompletionQuery.meta_query_id, ids)
    chats = await _by_ids(db, ChatQuery, ChatQuery.meta_query_id, ids)
    generations = await _grouped(db, Generation, Generation.meta_query_id, ids, Generation.model_id, keyring)
    truths = await _grouped(
        db, GroundTruth, GroundTruth.meta_query_id, ids, GroundTruth.truth_timestamp, keyring
    )
    page = []
    for m in metas:
        item = row(m)
        item["context"] = contexts.get(m.context_id)
        item["contextual_telemetry"] = contextual.get(m.contextual_telemetry_id)
        item["behavioral_telemetry"] = behavioral.get(m.behavioral_telemetry_id)
        item["completion_query"] = completions.get(m.meta_query_id)
        item["chat_query"] = chats.get(m.meta_query_id)
        item["generations"] = [
            {**g, "model_name": model_names.get(g["model_id"])} for g in generations.get(m.meta_query_id, [])
        ]
        item["ground_truths"] = truths.get(m.meta_query_id, [])
        page.append(item)
    return page


Sessions = async_sessionmaker[AsyncSession]


@asynccontextmanager
async def _reading(sessionmaker: Sessions) -> AsyncIterator[AsyncSession]:
    """A short read-only transaction (one snapshot for one page); its connection goes back on exit.

    Never yield a page of the document inside it: the connection would wait for the client's reading.
    """
    async with sessionmaker() as db:
        await db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        await db.execute(text("SET TRANSACTION READ ONLY"))
        try:
            yield db
        finally:
            await db.rollback()


async def _queries(
    sessionmaker: Sessions, user_id: uuid.UUID, model_names: dict[int, str], keyring: Keyring
) -> AsyncIterator[dict]:
    """The user's queries, oldest first, fetched by keyset pages (each in its own transaction)."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with _reading(sessionmaker) as db:
            stmt = select(MetaQuery).where(col(MetaQuery.user_id) == user_id)
            if after is not None:
                stmt = stmt.where(tuple_(col(MetaQuery.timestamp), col(MetaQuery.meta_query_id)) > after)
            metas = await _all(
                db, stmt.order_by(col(MetaQuery.timestamp), col(MetaQuery.meta_query_id)).limit(PAGE)
            )
            if not metas:
                return
            page = await _query_page(db, metas, model_names, keyring)
            after = (metas[-1].timestamp, metas[-1].meta_query_id)  # read before the rollback expires it
        for item in page:
            yield item


async def _chats(sessionmaker: Sessions, user_id: uuid.UUID, keyring: Keyring) -> AsyncIterator[dict]:
    """The user's chats with their messages, oldest first, fetched by keyset pages (each in its own transaction)."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        async with _reading(sessionmaker) as db:
            stmt = select(Chat).where(col(Chat.user_id) == user_id)
            if after is not None:
                stmt = stmt.where(tuple_(col(Chat.created_at), col(Chat.chat_id)) > after)
            chats = await _all(db, stmt.order_by(col(Chat.created_at), col(Chat.chat_id)).limit(PAGE))
            if not chats:
                return
            messages = await _grouped(
                db,
                ChatMessage,
                ChatMessage.chat_id,
                [c.chat_id for c in chats],
                ChatMessage.created_at,
                keyring,
            )
            page = [{**row(c, keyring=keyring), "messages": messages.get(c.chat_id, [])} for c in chats]
            after = (chats[-1].created_at, chats[-1].chat_id)
        for item in page:
            yield item


async def _projects(db: AsyncSession, user_id: uuid.UUID) -> list[dict]:
    result = await db.execute(
        select(Project, ProjectMember)
        .join(ProjectMember, col(ProjectMember.project_id) == col(Project.project_id))
        .where(col(ProjectMember.user_id) == user_id)
        .order_by(col(ProjectMember.joined_at))
    )
    return [
        {
            **row(project, exclude={"multi_file_contexts"}),
            "role": member.role,
            "joined_at": member.joined_at.isoformat(),
        }
        for project, member in result.all()
    ]


async def _sessions(db: AsyncSession, user_id: uuid.UUID) -> list[dict]:
    sessions = await _all(
        db, select(Session).where(col(Session.user_id) == user_id).order_by(col(Session.start_time))
    )
    projects = await _grouped(
        db,
        SessionProject,
        SessionProject.session_id,
        [s.session_id for s in sessions],
        SessionProject.project_id,
    )
    return [
        {**row(s), "project_ids": [p["project_id"] for p in projects.get(s.session_id, [])]} for s in sessions
    ]


async def _array(items: AsyncIterator[dict]) -> AsyncIterator[str]:
    yield "["
    first = True
    async for item in items:
        yield ("" if first else ",") + "\n" + _json(item)
        first = False
    yield "]"


async def _head(sessionmaker: Sessions, user_id: uuid.UUID) -> tuple[dict[str, Any], dict[int, str]] | None:
    """The document's first part (account, preference, projects, sessions, studies) and the model names."""
    async with _reading(sessionmaker) as db:
        user = await db.get(User, user_id)
        if user is None:
            return None
        model_names = {m.model_id: m.model_name for m in await _all(db, select(ModelName))}
        head = {
            "format": FORMAT,
            "exported_at": datetime.now(UTC).isoformat(),
            "user": row(user, exclude=HIDDEN_USER_FIELDS | {"preference"}),
            "preference": user.preference,
            "projects": await _projects(db, user_id),
            "sessions": await _sessions(db, user_id),
            "study_assignments": [
                row(a)
                for a in await _all(
                    db, select(StudyAssignment).where(col(StudyAssignment.user_id) == user_id)
                )
            ],
            # Names and times only: a token's hash is not the user's data (as for the password's).
            "api_tokens": [
                row(t, exclude={"token_hash"})
                for t in await _all(
                    db,
                    select(ApiToken)
                    .where(col(ApiToken.user_id) == user_id)
                    .order_by(col(ApiToken.created_at)),
                )
            ],
        }
        return head, model_names


async def export_user(sessionmaker: Sessions, user_id: uuid.UUID, keyring: Keyring) -> AsyncIterator[bytes]:
    """The user's export as UTF-8 JSON chunks (see the module docstring); no connection is held between them;
    stored code opened with `keyring`."""
    found = await _head(sessionmaker, user_id)
    if found is None:
        yield b"{}"
        return
    head, model_names = found
    yield (_json(head)[:-1] + ',\n"queries": ').encode()
    async for chunk in _array(_queries(sessionmaker, user_id, model_names, keyring)):
        yield chunk.encode()
    yield b',\n"chats": '
    async for chunk in _array(_chats(sessionmaker, user_id, keyring)):
        yield chunk.encode()
    yield b"}\n"
