"""Telemetry events: what the ingress appends to the Redis stream and the writer turns into rows.

Every event carries the primary key of the row it creates (ids are made by the ingress), so a replayed
event inserts nothing new: the stream is at-least-once, the tables exactly-once.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContextRow(_Event):
    """The (already redacted) code around the cursor."""

    context_id: uuid.UUID
    prefix: str | None = None
    suffix: str | None = None
    file_name: str | None = None
    selected_text: str | None = None
    context_files: list[str] | None = None


class ContextualRow(_Event):
    """Where and how the query was made."""

    contextual_telemetry_id: uuid.UUID
    version_id: int
    trigger_type_id: int
    language_id: int
    file_path: str | None = None
    caret_line: int | None = None
    document_char_length: int | None = None
    relative_document_position: float | None = None


class BehavioralRow(_Event):
    """The user's typing behaviour around the query."""

    behavioral_telemetry_id: uuid.UUID
    time_since_last_shown: int | None = None
    time_since_last_accepted: int | None = None
    typing_speed: float | None = None


class QueryEvent(_Event):
    """A completion or chat query with whatever context and telemetry the user allows storing."""

    kind: Literal["query"] = "query"
    meta_query_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None
    query_type: Literal["completion", "chat"]
    timestamp: datetime
    total_serving_time_ms: int | None = None
    context: ContextRow | None = None
    contextual: ContextualRow | None = None
    behavioral: BehavioralRow | None = None
    stop_sequences: list[str] = Field(default_factory=list)
    chat_id: uuid.UUID | None = None
    web_enabled: bool = False


class GenerationEvent(_Event):
    """One model's answer (or failure) to one query."""

    kind: Literal["generation"] = "generation"
    meta_query_id: uuid.UUID
    user_id: uuid.UUID | None = None  # the owner: events of a deleted account are dropped, never deferred
    model_id: int
    completion: str
    generation_time_ms: int
    confidence: float | None = None
    token_logprobs: list[float] | None = None
    error: str | None = None
    created_at: datetime
    chat_id: uuid.UUID | None = None  # set for chat turns: a deleted chat's late generations are dropped


class FeedbackEvent(_Event):
    """Acceptance and optional ground truth for one generation; event_id keys the ground-truth row."""

    kind: Literal["feedback"] = "feedback"
    event_id: uuid.UUID
    user_id: uuid.UUID | None = None
    meta_query_id: uuid.UUID
    model_id: int
    was_accepted: bool
    ground_truth: str | None = None
    timestamp: datetime


class ShownEvent(_Event):
    """A generation was shown to the user at this time (replays keep one entry per time)."""

    kind: Literal["shown"] = "shown"
    meta_query_id: uuid.UUID
    user_id: uuid.UUID | None = None
    model_id: int
    shown_at: datetime


class ChatEvent(_Event):
    """A chat conversation came into being (or got a new title)."""

    kind: Literal["chat"] = "chat"
    chat_id: uuid.UUID
    user_id: uuid.UUID
    project_id: uuid.UUID | None = None
    title: str
    created_at: datetime


class ChatMessageEvent(_Event):
    """One message of a chat: the user's turn or one model's answer."""

    kind: Literal["chat_message"] = "chat_message"
    message_id: uuid.UUID
    user_id: uuid.UUID | None = None
    chat_id: uuid.UUID
    meta_query_id: uuid.UUID | None = None
    role: str
    content: str
    model_id: int | None = None
    created_at: datetime


Event = Annotated[
    QueryEvent | GenerationEvent | FeedbackEvent | ShownEvent | ChatEvent | ChatMessageEvent,
    Field(discriminator="kind"),
]
_EVENT = TypeAdapter(Event)
# The compiled validator itself: TypeAdapter.validate_json's Python wrapper cost as much again per event.
_VALIDATE_JSON = _EVENT.validator.validate_json


def encode(event: _Event) -> bytes:
    """The stream field value of an event. Unset optional fields are left out (every field that may be
    None has None as its default, so decoding gives the same event): a third less to send, store and parse."""
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def decode(raw: bytes | str) -> Any:
    """An event from its stream field value; raises pydantic.ValidationError when malformed."""
    return _VALIDATE_JSON(raw)
