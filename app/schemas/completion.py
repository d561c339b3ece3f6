"""Completion request, response and feedback schemas (the plugin's wire shapes)."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field

from app.schemas.common import Body, Int32, Message, NonNegativeInt32, NonNegativeInt64

# A file path as an IDE sends it; a stop sequence is a few characters of code (`\n\n`, `def `, `</s>`).
FilePath = Annotated[str, Field(max_length=4096)]
StopSequence = Annotated[str, Field(max_length=256)]
# The files a request may name as context (as many as a project may keep live, app/infra/settings.py).
MAX_CONTEXT_FILES = 2000


class CompletionContext(Body):
    """The code around the cursor."""

    prefix: str = ""
    suffix: str = ""
    file_name: str | None = Field(default=None, max_length=4096)
    selected_text: str | None = None
    context_files: list[FilePath] | None = Field(default=None, max_length=MAX_CONTEXT_FILES)


class ContextualTelemetry(Body):
    """Where and how the completion was triggered."""

    version_id: Int32
    trigger_type_id: Int32
    language_id: Int32
    file_path: str | None = Field(default=None, max_length=4096)
    caret_line: NonNegativeInt32 | None = None
    document_char_length: NonNegativeInt32 | None = None
    relative_document_position: float | None = Field(default=None, ge=0.0, le=1.0)


class BehavioralTelemetry(Body):
    """The user's typing behaviour."""

    time_since_last_shown: NonNegativeInt64 | None = None
    time_since_last_accepted: NonNegativeInt64 | None = None
    typing_speed: float | None = Field(default=None, ge=0.0)


class CompletionRequest(Body):
    """POST /api/completion/request."""

    model_ids: list[Int32] = Field(min_length=1)
    context: CompletionContext
    contextual_telemetry: ContextualTelemetry
    behavioral_telemetry: BehavioralTelemetry = Field(default_factory=BehavioralTelemetry)
    # None (the plugin usually omits them) means: follow the user's stored preference.
    store_context: bool | None = None
    store_contextual_telemetry: bool | None = None
    store_behavioral_telemetry: bool | None = None
    # null (or absent) means none: the plugin's model has it nullable, and its inline path leaves it out.
    stop_sequences: Annotated[list[StopSequence], BeforeValidator(lambda v: [] if v is None else v)] = Field(
        default_factory=list, max_length=16
    )


class CompletionItem(BaseModel):
    """One model's answer."""

    model_id: int
    model_name: str
    completion: str
    generation_time: int
    confidence: float


class CompletionFailure(BaseModel):
    """The slot of a model that failed or ran out of time.

    The plugin's parser requires completion, generation_time and confidence on every slot (a bare
    `{message, model_name}` makes it drop the whole answer), so a failure carries empty values.
    """

    model_id: int
    model_name: str
    completion: str = ""
    generation_time: int = 0
    confidence: float = 0.0
    message: str = "Completion for model failed"


class CompletionData(BaseModel):
    """The data of a completion answer."""

    meta_query_id: uuid.UUID
    completions: list[CompletionItem | CompletionFailure]


class CompletionResponse(Message):
    """Answer to a completion request (and to GET /api/completion/{id})."""

    data: CompletionData


class FeedbackData(BaseModel):
    """What the feedback answer identifies."""

    meta_query_id: uuid.UUID
    model_id: int


class FeedbackResponse(Message):
    """Answer to feedback (the plugin requires `data`)."""

    data: FeedbackData


class FeedbackRequest(Body):
    """POST /api/completion/feedback."""

    meta_query_id: uuid.UUID
    model_id: Int32
    was_accepted: bool
    ground_truth: str | None = None
