"""OpenAI's legacy completions API (`POST /completions`, `GET /models`) as the `openai` package defines it
(openai-python `types/completion_create_params.py`, `completion.py`, `model.py`): what its clients send and read.

Served under `/openai/v1` (Tabby's API has `/v1/completions` already). The request's `prompt` is the code before
the cursor and `suffix` the code after it: the server renders the model family's fill-in-the-middle template.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field

from app.schemas.common import Body
from app.schemas.completion import StopSequence

# OpenAI allows 4; Continue's autocomplete sends up to 16 (as DeepSeek's API allows, and the plugin's route).
MAX_STOP_SEQUENCES = 16


def _one_text(value: object) -> object:
    """`prompt` as a text: OpenAI also takes a list of prompts (one completion each); one is what we serve."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    return value


def _stop_list(value: object) -> object:
    """`stop` as a list (one text or several)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else value


class OpenAICompletionRequest(Body):
    """POST /openai/v1/completions (unknown keys, e.g. `top_p` or `presence_penalty`, are ignored)."""

    model: str = Field(max_length=200)
    prompt: Annotated[str, BeforeValidator(_one_text)]
    suffix: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    # The platform's models decode greedily: accepted as OpenAI defines them, they do not change the answer.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = None
    stop: Annotated[list[StopSequence], BeforeValidator(_stop_list)] = Field(
        default_factory=list, max_length=MAX_STOP_SEQUENCES
    )
    stream: bool = False
    # Only the chosen tokens' log-probabilities exist (greedy decoding keeps no alternatives): 0 or null.
    logprobs: int | None = Field(default=None, ge=0, le=5)
    n: int = Field(default=1, ge=1, le=128)
    best_of: int | None = Field(default=None, ge=1, le=128)
    echo: bool = False
    user: str | None = Field(default=None, max_length=200)


class Logprobs(BaseModel):
    """The log-probabilities of the returned tokens (`tokens`, `top_logprobs` and `text_offset` are not kept)."""

    token_logprobs: list[float]


class CompletionChoice(BaseModel):
    """One completion (the one of the requested model)."""

    index: int
    text: str
    logprobs: Logprobs | None
    finish_reason: Literal["stop", "length"] | None


class OpenAICompletion(BaseModel):
    """The answer of POST /openai/v1/completions; a streamed one sends the same shape in pieces."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    # No `usage`: the prompt is tokenised in the model replica, its token count is not known here.
    choices: list[CompletionChoice]


class OpenAIModel(BaseModel):
    """One served completion model, by its registry name."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0  # not recorded
    owned_by: str


class OpenAIErrorDetail(BaseModel):
    """What went wrong, as OpenAI's clients parse it (`param`: the request field at fault, where one is)."""

    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(BaseModel):
    """Every error answer under /openai (app.errors.openai_error); 400 for any invalid request."""

    error: OpenAIErrorDetail


def openai_error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring OpenAI-style errors; "4XX" too, which also keeps FastAPI from
    declaring its own 422 (invalid input is a 400 here)."""
    keys: list[int | str] = [*codes, "4XX"]
    return {code: {"model": OpenAIErrorResponse} for code in keys}


class OpenAIModelList(BaseModel):
    """GET /openai/v1/models."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]
