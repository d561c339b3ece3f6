"""Routes under /api/completion/multi-file-context."""

from __future__ import annotations

from app.api.deps import DbDep, ProjectDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.schemas.common import error_responses
from app.schemas.context import MultiFileContextUpdate, MultiFileContextUpdateResponse
from app.services.context_updates import update_context

router = SlashTolerantRouter(prefix="/api/completion/multi-file-context", tags=["context"])
ERRORS = error_responses(401, 403, 413, 422, 503)


@router.post("/update", response_model=MultiFileContextUpdateResponse, responses=ERRORS)
async def update(
    body: MultiFileContextUpdate, project: ProjectDep, state: StateDep, db: DbDep
) -> MultiFileContextUpdateResponse:
    """Apply line-range changes to the project's live files (per file, bottom up); answers their lines."""
    return updated(await update_context(state, db, project, body))


def updated(files: dict[str, list[str]]) -> MultiFileContextUpdateResponse:
    """The envelope of an applied context update: each file's (redacted) lines (HTTP and WebSocket)."""
    return MultiFileContextUpdateResponse(message="Multi-file context updated successfully.", data=files)
