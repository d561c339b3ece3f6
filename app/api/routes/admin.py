"""Routes under /api/admin: administrators only (401 signed out, 403 for other users)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Query

from app.api.deps import AdminUser, ClientAddress, DbDep
from app.api.routing import SlashTolerantRouter
from app.schemas.audit import AuditEventPublic, AuditPageResponse
from app.schemas.common import INT64_MAX, error_responses
from app.services import audit
from app.services.audit import AuditAction, AuditFilter

router = SlashTolerantRouter(prefix="/api/admin", tags=["admin"])
MAX_PAGE = 500


@router.get("/audit", response_model=AuditPageResponse, responses=error_responses(401, 403))
async def audit_log(
    admin: AdminUser,
    db: DbDep,
    address: ClientAddress,
    actor: Annotated[uuid.UUID | None, Query(description="Only this user's actions")] = None,
    action: Annotated[AuditAction | None, Query(description="Only this action")] = None,
    since: Annotated[datetime | None, Query(description="From this time on (inclusive)")] = None,
    until: Annotated[datetime | None, Query(description="Before this time (exclusive)")] = None,
    before: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="The previous page's next_before")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> AuditPageResponse:
    """The audit log, newest first, filtered by actor, action and time; reading it is audited too."""
    wanted = AuditFilter(actor=actor, action=action, since=since, until=until)
    events, next_before = await audit.read_page(
        db, admin.user_id, wanted, before=before, limit=limit, address=address
    )
    return AuditPageResponse(
        message="Audit records retrieved successfully",
        events=[AuditEventPublic.model_validate(e, from_attributes=True) for e in events],
        next_before=next_before,
    )
