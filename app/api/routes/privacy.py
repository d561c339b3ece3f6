"""Routes for the user's own data: the export (deletion is DELETE /api/user/delete)."""

from __future__ import annotations

from fastapi.responses import StreamingResponse

from app.api.deps import ClientAddress, CurrentUser, DbDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.api.streaming import BoundedStreamingResponse
from app.schemas.common import error_responses
from app.services.data_export import export_user, record_export

router = SlashTolerantRouter(prefix="/api/user", tags=["privacy"])


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/json": {}}}, **error_responses(401)},
)
async def export(user: CurrentUser, state: StateDep, db: DbDep, address: ClientAddress) -> StreamingResponse:
    """Everything stored about the signed-in user, as one JSON document streamed as it is read (audited)."""
    await record_export(db, user.user_id, address=address)
    # The request's session (it read the caller's row) is closed only after the whole answer is sent: give
    # its connection back now, or every reader that stalls holds one. The export reads with its own, briefly.
    await db.close()
    settings = state.settings
    return BoundedStreamingResponse(
        export_user(state.sessionmaker, user.user_id, state.keyring),
        send_timeout_s=settings.export_send_timeout_s,
        max_duration_s=settings.export_max_duration_s,
        media_type="application/json",
        headers={
            "Content-Disposition": 'attachment; filename="code4me-export.json"',
            "Cache-Control": "no-store",
        },
    )
