"""Whether a project's context may be stored in PostgreSQL: every member must have opted in."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.schemas.user import Preference
from db.tables import ProjectMember, User


async def project_consents(db: AsyncSession, project_id: uuid.UUID) -> bool:
    """True when the project has members and all of them allow storing context (store_context)."""
    rows = await db.execute(
        select(User.preference)
        .join(ProjectMember, ProjectMember.user_id == User.user_id)  # type: ignore[arg-type]
        .where(ProjectMember.project_id == project_id)  # type: ignore[arg-type]
    )
    # A shared project's files are every member's context, so one member's refusal keeps them all out.
    prefs = [Preference.model_validate(p or {}).store_context for p in rows.scalars()]
    return bool(prefs) and all(prefs)
