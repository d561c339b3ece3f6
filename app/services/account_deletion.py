"""Deleting an account, with all its data or keeping its completion queries as anonymised research rows.

What `delete_data=false` keeps (no link to the person remains):
  meta_query (completion queries only) with user_id, session_id and project_id set to NULL, its
  completion_query, had_generation rows (model output, latency, confidence, acceptance),
  behavioral_telemetry and contextual_telemetry without file_path (paths often hold user or
  customer names). Study and arm ids stay, so studies keep their counts.
What it removes, as `delete_data=true` does: the user row, the code the user wrote (context,
  ground_truth), chats and their messages (including chat queries), sessions, project memberships,
  study assignments, and projects nobody else is a member of (with their indexed file chunks).
Redis: every auth, session and project token of the user ends either way.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from sqlalchemy import ColumnElement, and_, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.context import live_state
from app.identity import tokens
from app.services import audit
from app.services.audit import AuditAction
from db.tables import (
    BehavioralTelemetry,
    Chat,
    Context,
    ContextualTelemetry,
    GroundTruth,
    MetaQuery,
    Project,
    ProjectMember,
    Session,
    User,
)

KEPT_QUERY_TYPE = "completion"


async def delete_queries(db: AsyncSession, where: ColumnElement[bool]) -> int:
    """Delete meta queries (children cascade) and the context and telemetry rows only they referenced."""
    rows = (
        await db.execute(
            delete(MetaQuery)
            .where(where)
            .returning(
                col(MetaQuery.context_id),
                col(MetaQuery.contextual_telemetry_id),
                col(MetaQuery.behavioral_telemetry_id),
            )
        )
    ).all()
    context_ids = [r[0] for r in rows if r[0] is not None]
    contextual_ids = [r[1] for r in rows if r[1] is not None]
    behavioral_ids = [r[2] for r in rows if r[2] is not None]
    if context_ids:
        await db.execute(delete(Context).where(col(Context.context_id).in_(context_ids)))
    if contextual_ids:
        await db.execute(
            delete(ContextualTelemetry).where(
                col(ContextualTelemetry.contextual_telemetry_id).in_(contextual_ids)
            )
        )
    if behavioral_ids:
        await db.execute(
            delete(BehavioralTelemetry).where(
                col(BehavioralTelemetry.behavioral_telemetry_id).in_(behavioral_ids)
            )
        )
    return len(rows)


async def _anonymise_completion_queries(db: AsyncSession, user_id: uuid.UUID) -> None:
    owned = col(MetaQuery.user_id) == user_id
    await db.execute(
        delete(Context).where(col(Context.context_id).in_(select(col(MetaQuery.context_id)).where(owned)))
    )
    await db.execute(
        delete(GroundTruth).where(
            col(GroundTruth.meta_query_id).in_(select(col(MetaQuery.meta_query_id)).where(owned))
        )
    )
    await db.execute(
        update(ContextualTelemetry)
        .where(
            col(ContextualTelemetry.contextual_telemetry_id).in_(
                select(col(MetaQuery.contextual_telemetry_id)).where(owned)
            )
        )
        .values(file_path=None)
    )
    await db.execute(update(MetaQuery).where(owned).values(user_id=None, session_id=None, project_id=None))


async def _delete_solo_projects(db: AsyncSession, user_id: uuid.UUID) -> None:
    """Projects the user is in (or created) that have no other member go; shared projects stay."""
    me = ProjectMember.__table__.alias("me")  # type: ignore[attr-defined]
    other = ProjectMember.__table__.alias("other")  # type: ignore[attr-defined]
    mine = or_(
        col(Project.created_by) == user_id,
        exists().where(and_(me.c.project_id == Project.project_id, me.c.user_id == user_id)),
    )
    shared = exists().where(and_(other.c.project_id == Project.project_id, other.c.user_id != user_id))
    await db.execute(delete(Project).where(mine, ~shared))


async def delete_account(
    db: AsyncSession, redis: Redis, user_id: uuid.UUID, *, delete_data: bool, address: str
) -> None:
    """Remove the account in one transaction with its audit record, then end all its tokens (see the module
    docstring)."""
    if delete_data:
        await delete_queries(db, col(MetaQuery.user_id) == user_id)
    else:
        await delete_queries(
            db, and_(col(MetaQuery.user_id) == user_id, col(MetaQuery.query_type) != KEPT_QUERY_TYPE)
        )
        await _anonymise_completion_queries(db, user_id)
    await db.execute(delete(Chat).where(col(Chat.user_id) == user_id))
    await _delete_solo_projects(db, user_id)
    await db.execute(delete(Session).where(col(Session.user_id) == user_id))
    # Memberships and study assignments cascade; studies and shared projects the user created stay (SET NULL).
    await db.execute(delete(User).where(col(User.user_id) == user_id))
    await audit.record(
        db,
        AuditAction.USER_DELETE,
        actor=user_id,
        address=address,
        target=audit.user_target(user_id),
        detail={"delete_data": delete_data},
    )
    await db.commit()
    await tokens.revoke_user(redis, user_id)
    # After the tokens: no context update can bring the account's live code back.
    await live_state.drop_user(redis, user_id)
