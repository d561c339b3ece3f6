"""Routes under /api/chat."""

from __future__ import annotations

import uuid

from fastapi import Path

from app.api.deps import CurrentUser, DbDep, PluginSession, ProjectDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.schemas.chat import ChatDeleted, ChatHistoryPage, ChatHistoryResponse, ChatRequest
from app.schemas.common import error_responses
from app.services import chats

router = SlashTolerantRouter(prefix="/api/chat", tags=["chat"])
ERRORS = error_responses(401, 403, 404, 413, 422)


@router.post("/request", response_model=ChatHistoryResponse, responses=ERRORS)
async def request_chat(
    body: ChatRequest,
    user: CurrentUser,
    session: PluginSession,
    project: ProjectDep,
    state: StateDep,
    db: DbDep,
) -> ChatHistoryResponse:
    """Every requested chat model answers the conversation; a failed model gets an error item."""
    return await chats.request_chat(state, db, user, session, project, body)


@router.get("/get/{page_number}", response_model=ChatHistoryPage, responses=ERRORS)
async def chat_page(
    user: CurrentUser,
    project: ProjectDep,
    state: StateDep,
    db: DbDep,
    page_number: int = Path(ge=0, le=100_000),
) -> ChatHistoryPage:
    """A page of the caller's chats in the active project, newest first; pages count from 0."""
    return await chats.history_page(state, db, user, project, page_number)


@router.delete("/delete/{chat_id}", response_model=ChatDeleted, responses=ERRORS)
async def delete_chat(chat_id: uuid.UUID, user: CurrentUser, state: StateDep, db: DbDep) -> ChatDeleted:
    """Delete one of the caller's chats with everything stored about it; idempotent (an unknown chat is 200)."""
    return deleted(chat_id, await chats.delete_chat(state, db, user, chat_id))


def deleted(chat_id: uuid.UUID, removed: bool) -> ChatDeleted:
    """The envelope of a chat deletion: whether this call removed it (HTTP and WebSocket)."""
    return ChatDeleted(
        message="Chat deleted successfully" if removed else "Chat already deleted", chat_id=chat_id
    )
