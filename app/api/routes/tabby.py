"""Tabby's HTTP API under /v1 (health, completions, events), authenticated by a user's API token."""

from __future__ import annotations

from fastapi import Request, Response

from app.api.deps import ApiCaller, DbDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.api.server_timing import server_timing
from app.errors import Unprocessable
from app.schemas.common import Message, error_responses
from app.schemas.tabby import HealthState, LogEventRequest, TabbyCompletionRequest, TabbyCompletionResponse
from app.services import tabby

router = SlashTolerantRouter(prefix="/v1", tags=["tabby"])
ERRORS = error_responses(401, 403, 404, 413, 422, 503)


@router.get("/health", response_model=HealthState, responses=ERRORS)
@router.post("/health", response_model=HealthState, responses=ERRORS)  # Tabby serves both; agents retry POST
async def health(caller: ApiCaller, state: StateDep) -> HealthState:
    """The served models, the device and the version, as tabby-agent reads them (401 without a valid token)."""
    return tabby.health(state)


@router.post(
    "/completions", response_model=TabbyCompletionResponse, response_model_exclude_none=True, responses=ERRORS
)
async def completions(
    body: TabbyCompletionRequest, caller: ApiCaller, state: StateDep, request: Request, response: Response
) -> TabbyCompletionResponse:
    """A completion of the default models, stored as the user's completion query (`id`: `cmpl-<query id>`);
    `Server-Timing` gives the pipeline's stages as on the plugin's route."""
    answer, timings = await tabby.complete(state, caller, body, request.headers.get("user-agent", ""))
    response.headers["server-timing"] = server_timing(timings)
    return answer


@router.post("/events", response_model=Message, responses=ERRORS)
async def events(
    body: LogEventRequest, caller: ApiCaller, state: StateDep, db: DbDep, request: Request
) -> Message:
    """`view`, `select` or `dismiss` of a completion's choice: stored as shown, accepted or rejected."""
    # tabby-agent sends `select_kind` as a query parameter, Tabby's schema has it nowhere else.
    kind = request.query_params.get("select_kind")
    if kind not in (None, "", "line"):
        raise Unprocessable("select_kind must be 'line' when given")
    await tabby.log_event(state, db, caller, body)
    return Message(message="Event recorded")
