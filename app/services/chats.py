"""Chat: several chat models answer a conversation side by side (streamed), stored through the telemetry stream."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app import tokens
from app.errors import Forbidden, NotFound, PayloadTooLarge, Unprocessable
from app.redaction import redact
from app.schemas.chat import (
    ChatCompletionErrorItem,
    ChatCompletionItem,
    ChatHistoryItem,
    ChatHistoryPage,
    ChatHistoryResponse,
    ChatMessageItem,
    ChatRequest,
)
from app.schemas.user import Preference
from app.services.completions import redact_context, resolve_models
from app.state import AppState, ModelInfo
from app.telemetry.events import (
    BehavioralRow,
    ChatEvent,
    ChatMessageEvent,
    ContextRow,
    ContextualRow,
    GenerationEvent,
    QueryEvent,
)
from app.telemetry.stream import add_events, chat_deleted_key
from db.tables import (
    BehavioralTelemetry,
    Chat,
    ChatMessage,
    ChatQuery,
    Context,
    ContextualTelemetry,
    Generation,
    MetaQuery,
    User,
    utcnow,
)

log = logging.getLogger(__name__)
PER_PAGE = 10
TITLE_CHARS = 60
# Called with (model, text piece) as a model streams its answer (the WebSocket forwards them).
OnPiece = Callable[[ModelInfo, str], Awaitable[None]]


def _chat_key(chat_id: uuid.UUID) -> str:
    return f"{tokens.PREFIX}chat:{chat_id}"


def title_for(messages: list[tuple[str, str]]) -> str:
    """A short title from the first user message: its first non-empty line, whitespace collapsed."""
    for role, content in messages:
        if role != "user":
            continue
        for line in content.splitlines():
            words = " ".join(line.split())
            if words:
                return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"
    return "Untitled chat"


def model_messages(body: ChatRequest) -> list[dict[str, str]]:
    """The conversation as the model sees it: the code around the cursor first, as a system message."""
    ctx = body.context
    parts = []
    if ctx.file_name:
        parts.append(f"The user is editing {ctx.file_name}.")
    if ctx.selected_text:
        parts.append(f"Selected code:\n{ctx.selected_text}")
    if ctx.prefix or ctx.suffix:
        parts.append(f"Code before the cursor:\n{ctx.prefix}\nCode after the cursor:\n{ctx.suffix}")
    system = [{"role": "system", "content": "\n\n".join(parts)}] if parts else []
    return system + [{"role": role, "content": content} for role, content in body.messages]


async def _owner(state: AppState, db: AsyncSession, chat_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """(owner, title) of a chat from Redis (just created) or PostgreSQL; None when it does not exist."""
    raw = await state.redis.get(_chat_key(chat_id))
    if raw is not None:
        data = json.loads(raw)
        return uuid.UUID(data["user_id"]), str(data["title"])
    chat = await db.get(Chat, chat_id)
    return (chat.user_id, chat.title) if chat is not None else None


async def _answer(
    state: AppState, model: ModelInfo, messages: list[dict[str, str]], on_piece: OnPiece | None
) -> tuple[str | None, int, str | None]:
    """(text, milliseconds, error) of one chat model, streaming pieces to on_piece."""
    started = time.perf_counter()
    pieces: list[str] = []

    async def consume() -> None:
        async for piece in state.gateway.chat(model.name, messages):
            pieces.append(piece)
            if on_piece is not None:
                await on_piece(model, piece)

    try:
        await asyncio.wait_for(consume(), timeout=model.time_budget_s + 1.0)
        return "".join(pieces), int((time.perf_counter() - started) * 1000), None
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - one model's failure must not fail the others
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("chat model %s failed: %s", model.name, reason)
        return None, int((time.perf_counter() - started) * 1000), reason


async def request_chat(
    state: AppState,
    db: AsyncSession,
    user: User,
    session: tokens.SessionInfo,
    project: tokens.ProjectInfo,
    body: ChatRequest,
    on_piece: OnPiece | None = None,
) -> ChatHistoryResponse:
    """Ask every requested chat model, queue the turn for storage, answer with this turn's history item."""
    models = resolve_models(state, body.model_ids, chat=True)
    size = sum(len(c) for _r, c in body.messages) + len(body.context.prefix) + len(body.context.suffix)
    if size > state.settings.max_context_chars:
        raise PayloadTooLarge(
            f"Chat of {size} characters is over the limit of {state.settings.max_context_chars}"
        )
    ct = body.contextual_telemetry
    if ct is not None and (
        ct.language_id not in state.reference.languages
        or ct.trigger_type_id not in state.reference.trigger_types
        or ct.version_id not in state.reference.plugin_versions
    ):
        raise Unprocessable("Unknown language_id, trigger_type_id or version_id in contextual_telemetry")
    if await state.redis.exists(chat_deleted_key(body.chat_id)):
        raise NotFound("This chat was deleted")
    owner = await _owner(state, db, body.chat_id)
    if owner is not None and owner[0] != user.user_id:
        raise Forbidden("This chat belongs to another user")
    redacted = body.model_copy(
        update={
            "context": redact_context(body.context),
            "messages": [(role, redact(content)) for role, content in body.messages],
        }
    )
    title = owner[1] if owner is not None else title_for(redacted.messages)

    started = time.perf_counter()
    # Secrets never reach storage; whether the models see them is a setting (default: they do not).
    messages = model_messages(redacted if state.settings.redact_model_input else body)
    answers = await asyncio.gather(*(_answer(state, m, messages, on_piece) for m in models))
    total_ms = int((time.perf_counter() - started) * 1000)

    now = utcnow()
    meta_query_id = uuid.uuid4()
    prefs = Preference.model_validate(user.preference or {})
    keep_text = prefs.store_context and body.store_context is not False
    events: list[Any] = []
    if owner is None:
        events.append(
            ChatEvent(
                chat_id=body.chat_id,
                user_id=user.user_id,
                project_id=project.project_id,
                title=title,
                created_at=now,
            )
        )
    events.append(
        QueryEvent(
            meta_query_id=meta_query_id,
            user_id=user.user_id,
            session_id=session.session_id,
            project_id=project.project_id,
            query_type="chat",
            timestamp=now,
            total_serving_time_ms=total_ms,
            chat_id=body.chat_id,
            web_enabled=body.web_enabled,
            context=ContextRow(context_id=uuid.uuid4(), **redacted.context.model_dump())
            if keep_text
            else None,
            contextual=(
                ContextualRow(contextual_telemetry_id=uuid.uuid4(), **ct.model_dump())
                if ct is not None
                and prefs.store_contextual_telemetry
                and body.store_contextual_telemetry is not False
                else None
            ),
            behavioral=(
                BehavioralRow(behavioral_telemetry_id=uuid.uuid4(), **body.behavioral_telemetry.model_dump())
                if prefs.store_behavioral_telemetry and body.store_behavioral_telemetry is not False
                else None
            ),
        )
    )
    user_text = redacted.messages[-1][1]
    if keep_text:
        events.append(
            ChatMessageEvent(
                message_id=uuid.uuid4(),
                user_id=user.user_id,
                chat_id=body.chat_id,
                meta_query_id=meta_query_id,
                role="user",
                content=user_text,
                created_at=now,
            )
        )
    responses: list[ChatCompletionItem | ChatCompletionErrorItem] = []
    for model, (raw_text, ms, error) in zip(models, answers, strict=True):
        text = redact(raw_text) if raw_text is not None else None  # a model may echo or invent a secret
        events.append(
            GenerationEvent(
                meta_query_id=meta_query_id,
                user_id=user.user_id,
                model_id=model.model_id,
                completion=text or "",
                generation_time_ms=ms,
                error=error,
                created_at=utcnow(),
                chat_id=body.chat_id,
            )
        )
        if error is None and text is not None:
            if keep_text:
                events.append(
                    ChatMessageEvent(
                        message_id=uuid.uuid4(),
                        user_id=user.user_id,
                        chat_id=body.chat_id,
                        meta_query_id=meta_query_id,
                        role="assistant",
                        content=text,
                        model_id=model.model_id,
                        created_at=utcnow(),
                    )
                )
            responses.append(
                ChatCompletionItem(
                    model_id=model.model_id, model_name=model.name, completion=text, generation_time=ms
                )
            )
        else:
            responses.append(
                ChatCompletionErrorItem(model_id=model.model_id, model_name=model.name, generation_time=ms)
            )
    pipe = state.redis.pipeline(transaction=False)
    add_events(pipe, events)
    ttl = state.settings.query_cache_ttl_s
    pipe.set(_chat_key(body.chat_id), json.dumps({"user_id": str(user.user_id), "title": title}), ex=ttl)
    tokens.index_for_user(pipe, user.user_id, _chat_key(body.chat_id), ttl)  # so account deletion finds it
    await pipe.execute()
    return ChatHistoryResponse(
        chat_id=body.chat_id,
        title=title,
        history=[
            ChatHistoryItem(
                user_message=ChatMessageItem(content=user_text, timestamp=now, meta_query_id=meta_query_id),
                assistant_responses=responses,
            )
        ],
    )


async def history_page(
    state: AppState, db: AsyncSession, user: User, project: tokens.ProjectInfo, page: int
) -> ChatHistoryPage:
    """The caller's chats in the active project, newest first, PER_PAGE per page; pages count from 0 (the plugin's)."""
    chats = (
        (
            await db.execute(
                select(Chat)
                .where(col(Chat.user_id) == user.user_id, col(Chat.project_id) == project.project_id)
                .order_by(col(Chat.created_at).desc())
                .offset(page * PER_PAGE)
                .limit(PER_PAGE)
            )
        )
        .scalars()
        .all()
    )
    items = [await _history(state, db, chat) for chat in chats]
    return ChatHistoryPage(page=page, per_page=PER_PAGE, items=items)


async def _history(state: AppState, db: AsyncSession, chat: Chat) -> ChatHistoryResponse:
    turns = (
        (
            await db.execute(
                select(MetaQuery)
                .join(ChatQuery, ChatQuery.meta_query_id == MetaQuery.meta_query_id)  # type: ignore[arg-type]
                .where(ChatQuery.chat_id == chat.chat_id)  # type: ignore[arg-type]
                .order_by(MetaQuery.timestamp)  # type: ignore[arg-type]
            )
        )
        .scalars()
        .all()
    )
    ids = [t.meta_query_id for t in turns]
    user_texts = {
        m.meta_query_id: m.content
        for m in (
            await db.execute(
                select(ChatMessage).where(
                    col(ChatMessage.meta_query_id).in_(ids), col(ChatMessage.role) == "user"
                )
            )
        ).scalars()
    }
    gens: dict[uuid.UUID, list[Generation]] = {}
    for g in (await db.execute(select(Generation).where(Generation.meta_query_id.in_(ids)))).scalars():  # type: ignore[attr-defined]
        gens.setdefault(g.meta_query_id, []).append(g)
    history = []
    for t in turns:
        responses: list[ChatCompletionItem | ChatCompletionErrorItem] = []
        for g in sorted(gens.get(t.meta_query_id, []), key=lambda g: g.model_id):
            name = state.models[g.model_id].name if g.model_id in state.models else str(g.model_id)
            if g.error:
                responses.append(
                    ChatCompletionErrorItem(
                        model_id=g.model_id, model_name=name, generation_time=g.generation_time_ms
                    )
                )
            else:
                responses.append(
                    ChatCompletionItem(
                        model_id=g.model_id,
                        model_name=name,
                        completion=g.completion,
                        generation_time=g.generation_time_ms,
                        was_accepted=g.was_accepted,
                    )
                )
        history.append(
            ChatHistoryItem(
                user_message=ChatMessageItem(
                    content=user_texts.get(t.meta_query_id, ""),
                    timestamp=t.timestamp,
                    meta_query_id=t.meta_query_id,
                ),
                assistant_responses=responses,
            )
        )
    return ChatHistoryResponse(chat_id=chat.chat_id, title=chat.title, history=history)


async def delete_chat(state: AppState, db: AsyncSession, user: User, chat_id: uuid.UUID) -> bool:
    """Delete one of the caller's chats with its messages and turns; late telemetry for it is dropped.

    Idempotent for its owner: a chat that is already deleted, or that the server never stored (the plugin
    keeps chats locally and offers to delete them on the server too), is simply gone: False, nothing was
    deleted. Another user's chat is 403.
    """
    owner = await _owner(state, db, chat_id)
    if owner is None:
        return False
    if owner[0] != user.user_id:
        raise Forbidden("This chat belongs to another user")
    if await state.redis.exists(chat_deleted_key(chat_id)):
        return False
    # The tombstone first: events still in the stream must not bring the chat back.
    await state.redis.set(chat_deleted_key(chat_id), b"1", ex=7 * 24 * 3600)
    await state.redis.delete(_chat_key(chat_id))
    turns = (
        (
            await db.execute(
                select(MetaQuery)
                .join(ChatQuery, col(ChatQuery.meta_query_id) == col(MetaQuery.meta_query_id))
                .where(col(ChatQuery.chat_id) == chat_id)
            )
        )
        .scalars()
        .all()
    )
    await db.execute(delete(ChatMessage).where(ChatMessage.chat_id == chat_id))  # type: ignore[arg-type]
    # Turns cascade to their generations and ground truths; their context and telemetry rows go explicitly.
    await db.execute(delete(MetaQuery).where(MetaQuery.meta_query_id.in_([t.meta_query_id for t in turns])))  # type: ignore[attr-defined]
    for table, key, ids in (
        (Context, Context.context_id, [t.context_id for t in turns if t.context_id]),
        (
            ContextualTelemetry,
            ContextualTelemetry.contextual_telemetry_id,
            [t.contextual_telemetry_id for t in turns if t.contextual_telemetry_id],
        ),
        (
            BehavioralTelemetry,
            BehavioralTelemetry.behavioral_telemetry_id,
            [t.behavioral_telemetry_id for t in turns if t.behavioral_telemetry_id],
        ),
    ):
        if ids:
            await db.execute(delete(table).where(key.in_(ids)))  # type: ignore[attr-defined]
    await db.execute(delete(Chat).where(Chat.chat_id == chat_id))  # type: ignore[arg-type]
    await db.commit()
    return True
