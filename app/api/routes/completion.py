"""Routes under /api/completion."""

from __future__ import annotations

import uuid

from fastapi import Response

from app.api.deps import Caller, CurrentUser, DbDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.api.server_timing import server_timing
from app.schemas.common import error_responses
from app.schemas.completion import (
    CompletionData,
    CompletionRequest,
    CompletionResponse,
    FeedbackData,
    FeedbackRequest,
    FeedbackResponse,
)
from app.services import completions

router = SlashTolerantRouter(prefix="/api/completion", tags=["completion"])
ERRORS = error_responses(401, 403, 404, 409, 413, 422)  # 409: superseded by a newer request of the session


@router.post("/request", response_model=CompletionResponse, responses=ERRORS)
async def request_completion(
    body: CompletionRequest, caller: Caller, state: StateDep, response: Response
) -> CompletionResponse:
    """Completions from every requested model, side by side; a failed model gets a failure slot.

    The `Server-Timing` header gives the stages in ms (prepare: checks, redaction, snippets; models: the
    side-by-side calls; replica: the slowest model replica's own time; events: the telemetry round trip).
    """
    answer = await completions.request_completion(state, caller, caller.session, caller.project, body)
    response.headers["server-timing"] = server_timing(answer.timings)
    return generated(answer.data)


def generated(data: CompletionData) -> CompletionResponse:
    """The envelope of a completion answer (HTTP and WebSocket)."""
    return CompletionResponse(message="Completions generated successfully", data=data)


def recorded(body: FeedbackRequest) -> FeedbackResponse:
    """The envelope of recorded feedback (HTTP and WebSocket)."""
    return FeedbackResponse(
        message="Feedback recorded successfully",
        data=FeedbackData(meta_query_id=body.meta_query_id, model_id=body.model_id),
    )


@router.post("/feedback", response_model=FeedbackResponse, responses=ERRORS)
async def feedback(body: FeedbackRequest, user: CurrentUser, state: StateDep, db: DbDep) -> FeedbackResponse:
    """Record whether a completion was accepted and, optionally, the ground truth."""
    await completions.feedback(state, db, user, body)
    return recorded(body)


@router.get("/{meta_query_id}", response_model=CompletionResponse, responses=ERRORS)
async def get_completion(
    meta_query_id: uuid.UUID, user: CurrentUser, state: StateDep, db: DbDep
) -> CompletionResponse:
    """A stored completion query; only its owner may read it."""
    data = await completions.get_completion(state, db, user, meta_query_id)
    return CompletionResponse(message="Completion retrieved successfully", data=data)
