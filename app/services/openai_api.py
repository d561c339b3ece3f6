"""OpenAI's completions API on the platform's one request pipeline: one named model, fill-in-the-middle.

A completion is a completion query like the plugin's (`completions.request_completion`): `prompt` is the code
before the cursor, `suffix` the code after it, and the model replica renders its family's fill-in-the-middle
template around them (the thing an OpenAI server of a raw model cannot do). Storage, consent, redaction and
rate limits are the plugin's; the caller is the user of an API token, as on Tabby's routes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Literal

from app.errors import BadRequest, NotFound, ServiceUnavailable
from app.infra.state import AppState, ModelInfo
from app.schemas.completion import CompletionContext, CompletionItem, CompletionRequest, ContextualTelemetry
from app.schemas.openai_api import (
    CompletionChoice,
    Logprobs,
    OpenAICompletion,
    OpenAICompletionRequest,
    OpenAIModel,
    OpenAIModelList,
)
from app.services import client_versions, completions
from app.services.pipeline import Requester
from db.seed_data import UNKNOWN_LANGUAGE_ID

OWNER = "code4me"


def finish_reason(stopped_by: str) -> Literal["stop", "length"]:
    """OpenAI's `finish_reason` of the generator's: a token or time limit is "length", every stop "stop"."""
    return "length" if stopped_by in ("length", "time_budget") else "stop"


def completion_models(state: AppState) -> list[ModelInfo]:
    """The served completion models, ascending ids."""
    return sorted((m for m in state.models.values() if not m.is_chat), key=lambda m: m.model_id)


def models(state: AppState) -> OpenAIModelList:
    """GET /models: the served completion models by their registry names."""
    return OpenAIModelList(data=[OpenAIModel(id=m.name, owned_by=OWNER) for m in completion_models(state)])


def model_named(state: AppState, name: str) -> ModelInfo:
    """The completion model a request names (404 `model_not_found` otherwise, as OpenAI answers)."""
    for model in completion_models(state):
        if model.name == name:
            return model
    raise NotFound(
        f"The model '{name[:200]}' does not exist: GET /openai/v1/models lists them", param="model"
    )


def _check_supported(body: OpenAICompletionRequest) -> None:
    """400 for what the platform cannot do, rather than an answer that pretends it did."""
    if body.n != 1 or (body.best_of or 1) != 1:
        raise BadRequest("Only one completion per request (n = best_of = 1): decoding is greedy", param="n")
    if body.echo:
        raise BadRequest("echo is not supported", param="echo")
    if body.logprobs:
        raise BadRequest(
            "Only the chosen tokens' log-probabilities exist (greedy decoding keeps no alternatives): "
            "send logprobs 0",
            param="logprobs",
        )


async def complete(
    state: AppState, caller: Requester, body: OpenAICompletionRequest, user_agent: str
) -> tuple[OpenAICompletion, dict[str, float]]:
    """An OpenAI completion through the platform's pipeline (stored as a completion query), with the
    pipeline's stage timings (the route's `Server-Timing`, as the plugin's route reports them)."""
    model = model_named(state, body.model)
    _check_supported(body)
    suffix = body.suffix or ""
    request = CompletionRequest(
        model_ids=[model.model_id],
        context=CompletionContext(prefix=body.prompt, suffix=suffix),
        contextual_telemetry=ContextualTelemetry(
            version_id=await client_versions.plugin_version_id(
                state, user_agent, client_versions.OPENAI_IDE_TYPE
            ),
            # A client that asks for a completion explicitly: multi-line unless the cursor is mid-line.
            trigger_type_id=completions.MANUAL_TRIGGER_ID,
            language_id=UNKNOWN_LANGUAGE_ID,
            document_char_length=len(body.prompt) + len(suffix),
        ),
        stop_sequences=body.stop,
    )
    answer = await completions.request_completion(
        state, caller, None, None, request, max_new_tokens=body.max_tokens
    )
    (slot,) = answer.data.completions
    result = answer.results.get(model.model_id)
    if not isinstance(slot, CompletionItem) or result is None:
        # The model failed (its failure slot is stored like the plugin's): an outage of that model.
        raise ServiceUnavailable(f"The model '{model.name}' did not answer; retry later")
    logprobs = Logprobs(token_logprobs=list(result.token_logprobs)) if body.logprobs is not None else None
    choice = CompletionChoice(
        index=0, text=slot.completion, logprobs=logprobs, finish_reason=finish_reason(result.stopped_by)
    )
    completion = OpenAICompletion(
        id=f"cmpl-{answer.data.meta_query_id}", created=int(time.time()), model=model.name, choices=[choice]
    )
    return completion, answer.timings


def stream_events(completion: OpenAICompletion) -> Iterator[str]:
    """A completion as OpenAI's server-sent events: the text in one chunk, then its finish, then `[DONE]`.

    The replica answers a completion whole, so the text is one piece; the shape is OpenAI's streamed one.
    """
    (choice,) = completion.choices
    text = choice.model_copy(update={"finish_reason": None})
    done = choice.model_copy(update={"text": "", "logprobs": None})
    for piece in (text, done):
        chunk = completion.model_copy(update={"choices": [piece]})
        yield f"data: {json.dumps(chunk.model_dump(mode='json'))}\n\n"
    yield "data: [DONE]\n\n"
