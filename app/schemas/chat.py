"""Chat request, history and page schemas (the plugin's wire shapes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from app.schemas.common import Body, Message
from app.schemas.completion import BehavioralTelemetry, CompletionContext, ContextualTelemetry


class ChatRequest(Body):
    """POST /api/chat/request: the whole conversation so far, ending with the user's new turn.

    Assistant messages after the last user message are dropped: they are not a turn to answer (the
    plugin's chat window has sent its display placeholder `["assistant", "Generating."]` there).
    """

    model_ids: list[int] = Field(min_length=1)
    chat_id: uuid.UUID
    messages: list[tuple[str, str]] = Field(min_length=1, max_length=200)
    context: CompletionContext = Field(default_factory=CompletionContext)
    contextual_telemetry: ContextualTelemetry | None = None
    behavioral_telemetry: BehavioralTelemetry = Field(default_factory=BehavioralTelemetry)
    store_context: bool | None = None
    store_contextual_telemetry: bool | None = None
    store_behavioral_telemetry: bool | None = None
    web_enabled: bool = False

    @field_validator("messages")
    @classmethod
    def _roles(cls, messages: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for role, _content in messages:
            if role not in ("user", "assistant", "system"):
                raise ValueError(f"message role must be user, assistant or system, not {role!r}")
        end = len(messages)
        while end and messages[end - 1][0] == "assistant":
            end -= 1
        if not end or messages[end - 1][0] != "user":
            raise ValueError(
                "the conversation must end with a user message (trailing assistant messages are ignored)"
            )
        return messages[:end]


class ChatMessageItem(BaseModel):
    """The user's turn."""

    role: Literal["user", "assistant"] = "user"
    content: str
    timestamp: datetime
    meta_query_id: uuid.UUID


class ChatCompletionItem(BaseModel):
    """One model's answer to a turn."""

    model_id: int
    model_name: str
    completion: str
    generation_time: int
    confidence: float = 0.0
    was_accepted: bool = False


class ChatCompletionErrorItem(BaseModel):
    """A model that could not answer (the others still do).

    The plugin's parser requires every answer field on every slot (a bare `{model_id, model_name, message}`
    makes it drop the whole turn, and a history page holding one), so a failure carries empty values.
    """

    model_id: int
    model_name: str
    completion: str = ""
    generation_time: int = 0
    confidence: float = 0.0
    was_accepted: bool = False
    message: str = "Chat completion for model failed"


class ChatHistoryItem(BaseModel):
    """One turn: the user's message and every model's answer."""

    user_message: ChatMessageItem
    assistant_responses: list[ChatCompletionItem | ChatCompletionErrorItem]


class ChatHistoryResponse(BaseModel):
    """A chat with (part of) its history."""

    chat_id: uuid.UUID
    title: str
    history: list[ChatHistoryItem]


class ChatHistoryPage(BaseModel):
    """GET /api/chat/get/{page_number}: the project's chats, newest first."""

    page: int
    per_page: int
    items: list[ChatHistoryResponse]


class ChatDeleted(Message):
    """DELETE /api/chat/delete/{chat_id}."""

    chat_id: uuid.UUID
