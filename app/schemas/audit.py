"""Audit log schemas: one record as an admin reads it, and a page of them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from app.schemas.common import Message


class AuditEventPublic(BaseModel):
    """One audited action."""

    audit_id: int
    at: datetime
    actor_id: uuid.UUID | None
    action: str
    target_type: str | None
    target_id: str | None
    client_address: str | None
    detail: dict[str, Any]


class AuditPageResponse(Message):
    """GET /api/admin/audit: records newest first; pass `next_before` as `before` for the next page."""

    events: list[AuditEventPublic]
    next_before: int | None
