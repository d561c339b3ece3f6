"""OpenAI's completions API under /openai/v1 (models, completions), authenticated by a user's API token.

Tabby's API owns /v1/completions, so OpenAI's lives under its own base path: an OpenAI client is pointed at
`<server>/openai/v1`. Errors on these paths have OpenAI's body (`app.errors.openai_error`).
"""

from __future__ import annotations

from fastapi import Request, Response
from starlette.responses import StreamingResponse

from app.api.deps import ApiCaller, StateDep
from app.api.routing import SlashTolerantRouter
from app.api.server_timing import server_timing
from app.schemas.openai_api import (
    OpenAICompletion,
    OpenAICompletionRequest,
    OpenAIModelList,
    openai_error_responses,
)
from app.services import openai_api

router = SlashTolerantRouter(prefix="/openai/v1", tags=["openai"])
# Every error has OpenAI's body, `{"error": {"message", "type", "param", "code"}}` (400 for invalid input).
ERRORS = openai_error_responses(400, 401, 404, 429, 503)


@router.get("/models", response_model=OpenAIModelList, responses=ERRORS)
async def models(caller: ApiCaller, state: StateDep) -> OpenAIModelList:
    """The served completion models, by the names a request's `model` takes."""
    return openai_api.models(state)


COMPLETION_RESPONSES = {**ERRORS, 200: {"content": {"text/event-stream": {}}}}


@router.post("/completions", response_model=OpenAICompletion, responses=COMPLETION_RESPONSES)
# DeepSeek's name of the same API (fill-in-the-middle with `suffix`): where Continue's `deepseek` provider,
# the one of Continue's that sends `suffix` to an OpenAI-style server, asks for autocompletions.
@router.post("/beta/completions", response_model=OpenAICompletion, responses=COMPLETION_RESPONSES)
async def completions(
    body: OpenAICompletionRequest, caller: ApiCaller, state: StateDep, request: Request, response: Response
) -> OpenAICompletion | StreamingResponse:
    """A fill-in-the-middle completion of `model` (`prompt` before the cursor, `suffix` after it); with
    `stream`, server-sent events in OpenAI's chunk format ending with `data: [DONE]`."""
    answer, timings = await openai_api.complete(state, caller, body, request.headers.get("user-agent", ""))
    # `Server-Timing`: the pipeline's stages, as on the plugin's route.
    headers = {"server-timing": server_timing(timings)}
    if not body.stream:
        response.headers.update(headers)
        return answer
    # The answer is complete before the stream starts (errors are proper error answers), and a few hundred
    # bytes: nothing is held open for a reader that does not read.
    return StreamingResponse(
        openai_api.stream_events(answer), media_type="text/event-stream", headers=headers
    )
