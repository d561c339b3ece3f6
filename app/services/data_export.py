"""Everything stored about a user, as one JSON document written incrementally (GDPR access/portability).

The document is produced from one read-only REPEATABLE READ snapshot, page by page, so memory stays
flat however many queries a user has. Shared project contents (indexed file chunks, the project's
multi-file context) belong to the project's members together and are not part of one user's export.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel, col

from app.infra.encryption import opened
from app.infra.envelope import Keyring
from db.tables import (
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


async def _queries(
    db: AsyncSession, user_id: uuid.UUID, model_names: dict[int, str], keyring: Keyring
) -> AsyncIterator[dict]:
    """The user's queries, oldest first, fetched by keyset pages."""
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        stmt = select(MetaQuery).where(col(MetaQuery.user_id) == user_id)
        if after is not None:
            stmt = stmt.where(tuple_(col(MetaQuery.timestamp), col(MetaQuery.meta_query_id)) > after)
        metas = await _all(
            db, stmt.order_by(col(MetaQuery.timestamp), col(MetaQuery.meta_query_id)).limit(PAGE)
        )
        if not metas:
            return
        for item in await _query_page(db, metas, model_names, keyring):
            yield item
        after = (metas[-1].timestamp, metas[-1].meta_query_id)


async def _chats(db: AsyncSession, user_id: uuid.UUID, keyring: Keyring) -> AsyncIterator[dict]:
    chats = await _all(db, select(Chat).where(col(Chat.user_id) == user_id).order_by(col(Chat.created_at)))
    for start in range(0, len(chats), PAGE):
        page = chats[start : start + PAGE]
        messages = await _grouped(
            db, ChatMessage, ChatMessage.chat_id, [c.chat_id for c in page], ChatMessage.created_at, keyring
        )
        for c in page:
            yield {**row(c, keyring=keyring), "messages": messages.get(c.chat_id, [])}


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


async def export_user(
    sessionmaker: async_sessionmaker[AsyncSession], user_id: uuid.UUID, keyring: Keyring
) -> AsyncIterator[bytes]:
    """The user's export as UTF-8 JSON chunks (see the module docstring); stored code opened with `keyring`."""
    async with sessionmaker() as db:
        # One consistent snapshot for the whole document, however long the client takes to read it.
        await db.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        await db.execute(text("SET TRANSACTION READ ONLY"))
        user = await db.get(User, user_id)
        if user is None:
            yield b"{}"
            return
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
        }
        yield (_json(head)[:-1] + ',\n"queries": ').encode()
        async for chunk in _array(_queries(db, user_id, model_names, keyring)):
            yield chunk.encode()
        yield b',\n"chats": '
        async for chunk in _array(_chats(db, user_id, keyring)):
            yield chunk.encode()
        yield b"}\n"
        await db.rollback()
