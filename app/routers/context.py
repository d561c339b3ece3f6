"""Routes under /api/completion/multi-file-context."""

from __future__ import annotations

from typing import Any

from app.context.updates import update_context
from app.deps import DbDep, ProjectDep, StateDep
from app.routing import SlashTolerantRouter
from app.schemas.common import ErrorResponse
from app.schemas.context import MultiFileContextUpdate, MultiFileContextUpdateResponse

router = SlashTolerantRouter(prefix="/api/completion/multi-file-context", tags=["context"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse},
    403: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


@router.post("/update", response_model=MultiFileContextUpdateResponse, responses=ERRORS)
async def update(
    body: MultiFileContextUpdate, project: ProjectDep, state: StateDep, db: DbDep
) -> MultiFileContextUpdateResponse:
    """Apply line-range changes to the project's live files (per file, bottom up); answers their lines."""
    return await update_context(state, db, project, body)
