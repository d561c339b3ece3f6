"""Chat: several chat models answer a conversation side by side (streamed), stored through the telemetry stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import cast

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Forbidden, NotFound
from app.identity import tokens
from app.infra.encryption import generation_aad, message_aad, title_aad
from app.infra.state import AppState, ModelInfo
from app.protocol import ChatCall, ChatRole
from app.protocol import ChatMessage as Turn
from app.schemas.chat import (
    ChatCompletionErrorItem,
    ChatCompletionItem,
    ChatHistoryItem,
    ChatHistoryPage,
    ChatHistoryResponse,
    ChatMessageItem,
    ChatRequest,
)
from app.services.account_deletion import delete_queries
from app.services.pipeline import (
    Kept,
    RecentCache,
    Requester,
    Storage,
    check_reference_ids,
    check_size,
    commit,
    context_size,
    fan_out,
    query_event,
    redact_context,
    redact_texts,
    resolve_models,
)
from app.telemetry.events import ChatEvent, ChatMessageEvent, GenerationEvent
from app.telemetry.stream import chat_deleted_key
from db.tables import Chat, ChatMessage, ChatQuery, Generation, MetaQuery, utcnow

PER_PAGE = 10
TITLE_CHARS = 60
# Called with (model, text piece) as a model streams its answer (the WebSocket forwards them).
OnPiece = Callable[[ModelInfo, str], Awaitable[None]]


class ChatTitle(BaseModel):
    """What is kept of a chat in Redis until the writer has stored it: its title (the owner is kept with it)."""

    title: str


# Chats just created, readable by their owner (follow-up turns, deletion) before the writer stores them.
RECENT = RecentCache("chat", ChatTitle)


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


def model_call(body: ChatRequest) -> ChatCall:
    """The conversation as the model sees it: the code around the cursor first, as a system message."""
    ctx = body.context
    parts = []
    if ctx.file_name:
        parts.append(f"The user is editing {ctx.file_name}.")
    if ctx.selected_text:
        parts.append(f"Selected code:\n{ctx.selected_text}")
    if ctx.prefix or ctx.suffix:
        parts.append(f"Code before the cursor:\n{ctx.prefix}\nCode after the cursor:\n{ctx.suffix}")
    system = [Turn("system", "\n\n".join(parts))] if parts else []
    turns = [Turn(_role(role), content) for role, content in body.messages]
    return ChatCall(tuple(system + turns), max_new_tokens=None)


def _role(role: str) -> ChatRole:
    return cast(ChatRole, role)  # ChatRequest has validated the roles


async def _owner(state: AppState, db: AsyncSession, chat_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """(owner, title) of a chat from Redis (just created) or PostgreSQL; None when it does not exist."""
    recent = await RECENT.recall(state.redis, chat_id)
    if recent is not None:
        return recent[0], recent[1].title
    chat = await db.get(Chat, chat_id)
    return (chat.user_id, state.keyring.open(chat.title, title_aad(chat_id))) if chat is not None else None


async def request_chat(
    state: AppState,
    db: AsyncSession,
    user: Requester,
    session: tokens.SessionInfo,
    project: tokens.ProjectInfo,
    body: ChatRequest,
    on_piece: OnPiece | None = None,
) -> ChatHistoryResponse:
    """Ask every requested chat model, queue the turn for storage, answer with this turn's history item."""
    models = resolve_models(state, body.model_ids, chat=True)
    check_size(state, "Chat", sum(len(c) for _r, c in body.messages) + context_size(body.context))
    ct = body.contextual_telemetry
    if ct is not None:
        check_reference_ids(state, ct)
    if await state.redis.exists(chat_deleted_key(body.chat_id)):
        raise NotFound("This chat was deleted")
    owner = await _owner(state, db, body.chat_id)
    if owner is not None and owner[0] != user.user_id:
        raise Forbidden("This chat belongs to another user")
    contents = await redact_texts(state, [content for _role, content in body.messages])
    redacted = body.model_copy(
        update={
            "context": await redact_context(state, body.context),
            "messages": [(role, text) for (role, _), text in zip(body.messages, contents, strict=True)],
        }
    )
    title = owner[1] if owner is not None else title_for(redacted.messages)
    # Secrets never reach storage; whether the models see them is a setting (default: they do not).
    call = model_call(redacted if state.settings.redact_model_input else body)

    async def ask(model: ModelInfo) -> str:
        pieces: list[str] = []
        async for piece in state.gateway.chat(model.name, call):
            pieces.append(piece)
            if on_piece is not None:
                await on_piece(model, piece)
        return "".join(pieces)

    started = time.perf_counter()
    outcomes = await fan_out(state, models, ask)
    total_ms = int((time.perf_counter() - started) * 1000)

    now = utcnow()
    meta_query_id = uuid.uuid4()
    storage = Storage.of(
        user.preference, body.store_context, body.store_contextual_telemetry, body.store_behavioral_telemetry
    )
    events: list[BaseModel] = []
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
        query_event(
            "chat",
            user,
            session,
            project,
            storage,
            meta_query_id=meta_query_id,
            total_ms=total_ms,
            context=redacted.context,
            contextual=ct,
            behavioral=body.behavioral_telemetry,
            chat_id=body.chat_id,
            web_enabled=body.web_enabled,
        )
    )
    user_text = redacted.messages[-1][1]
    if storage.context:
        events.append(_message(user.user_id, body.chat_id, meta_query_id, "user", user_text))
    responses: list[ChatCompletionItem | ChatCompletionErrorItem] = []
    # A model may echo or invent a secret.
    answers = iter(await redact_texts(state, [o.result for o in outcomes if o.result is not None]))
    for outcome in outcomes:
        model = outcome.model
        text = next(answers) if outcome.result is not None else None
        events.append(
            GenerationEvent(
                meta_query_id=meta_query_id,
                user_id=user.user_id,
                model_id=model.model_id,
                completion=text or "",
                generation_time_ms=outcome.elapsed_ms,
                error=outcome.error,
                created_at=utcnow(),
                chat_id=body.chat_id,
            )
        )
        if text is None:
            responses.append(
                ChatCompletionErrorItem(
                    model_id=model.model_id, model_name=model.name, generation_time=outcome.elapsed_ms
                )
            )
            continue
        if storage.context:
            events.append(
                _message(user.user_id, body.chat_id, meta_query_id, "assistant", text, model.model_id)
            )
        responses.append(
            ChatCompletionItem(
                model_id=model.model_id,
                model_name=model.name,
                completion=text,
                generation_time=outcome.elapsed_ms,
            )
        )
    await commit(state, user.user_id, events, Kept(RECENT, body.chat_id, ChatTitle(title=title)))
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


def _message(
    user_id: uuid.UUID,
    chat_id: uuid.UUID,
    meta_query_id: uuid.UUID,
    role: str,
    content: str,
    model_id: int | None = None,
) -> ChatMessageEvent:
    return ChatMessageEvent(
        message_id=uuid.uuid4(),
        user_id=user_id,
        chat_id=chat_id,
        meta_query_id=meta_query_id,
        role=role,
        content=content,
        model_id=model_id,
        created_at=utcnow(),
    )


async def history_page(
    state: AppState, db: AsyncSession, user: Requester, project: tokens.ProjectInfo, page: int
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
        m.meta_query_id: state.keyring.open(m.content, message_aad(m.message_id))
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
                        completion=state.keyring.open(
                            g.completion, generation_aad(g.meta_query_id, g.model_id)
                        ),
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
    title = state.keyring.open(chat.title, title_aad(chat.chat_id))
    return ChatHistoryResponse(chat_id=chat.chat_id, title=title, history=history)


async def delete_chat(state: AppState, db: AsyncSession, user: Requester, chat_id: uuid.UUID) -> bool:
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
    await RECENT.forget(state.redis, chat_id)
    await db.execute(delete(ChatMessage).where(col(ChatMessage.chat_id) == chat_id))
    # Turns cascade to their generations and ground truths; their context and telemetry rows go with them.
    turns = select(col(ChatQuery.meta_query_id)).where(col(ChatQuery.chat_id) == chat_id)
    await delete_queries(db, col(MetaQuery.meta_query_id).in_(turns))
    await db.execute(delete(Chat).where(col(Chat.chat_id) == chat_id))
    await db.commit()
    return True
