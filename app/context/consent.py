"""Whether a project's context may be stored in PostgreSQL: every member must have opted in."""

from __future__ import annotations

import uuid

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.schemas.user import Preference
from db.tables import ContextChunk, ProjectMember, User


async def project_consents(db: AsyncSession, project_id: uuid.UUID) -> bool:
    """True when the project has members and all of them allow storing context (store_context)."""
    users: Table = User.__table__  # type: ignore[attr-defined]
    members: Table = ProjectMember.__table__  # type: ignore[attr-defined]
    rows = await db.execute(
        select(users.c.preference)
        .join(members, members.c.user_id == users.c.user_id)
        .where(members.c.project_id == project_id)
    )
    # A shared project's files are every member's context, so one member's refusal keeps them all out.
    prefs = [Preference.model_validate(p or {}).store_context for p in rows.scalars()]
    return bool(prefs) and all(prefs)


async def forget_context_of_user(db: AsyncSession, user_id: uuid.UUID) -> int:
    """Delete the indexed chunks of every project the user is a member of (they withdrew consent); not committed."""
    members: Table = ProjectMember.__table__  # type: ignore[attr-defined]
    chunks: Table = ContextChunk.__table__  # type: ignore[attr-defined]
    result = await db.execute(
        delete(chunks).where(
            chunks.c.project_id.in_(select(members.c.project_id).where(members.c.user_id == user_id))
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
