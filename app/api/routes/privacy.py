"""Routes for the user's own data: the export (deletion is DELETE /api/user/delete)."""

from __future__ import annotations

from fastapi.responses import StreamingResponse

from app.api.deps import CurrentUser, StateDep
from app.api.routing import SlashTolerantRouter
from app.schemas.common import error_responses
from app.services.data_export import export_user

router = SlashTolerantRouter(prefix="/api/user", tags=["privacy"])


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}}}, **error_responses(401)},
)
async def export(user: CurrentUser, state: StateDep) -> StreamingResponse:
    """Everything stored about the signed-in user, as one JSON document streamed as it is read."""
    return StreamingResponse(
        export_user(state.sessionmaker, user.user_id, state.keyring),
        media_type="application/json",
        headers={
            "Content-Disposition": 'attachment; filename="code4me-export.json"',
            "Cache-Control": "no-store",
        },
    )
