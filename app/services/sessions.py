"""Session acquire and deactivate: tokens in Redis, session rows in PostgreSQL."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.context.consent import project_consents
from app.context.live_state import Owner, drop
from app.identity import tokens
from app.infra.settings import Settings
from app.services import audit
from app.services.audit import AuditAction
from db.tables import Session, SessionProject, utcnow


async def acquire(
    db: AsyncSession, redis: Redis, settings: Settings, user_id: uuid.UUID, auth_token: str
) -> str:
    """The user's live session token (renewed), or a new session; either way one more holder of it.

    The plugin acquires at every IDE project's start, shares the one session (and cookie jar) between the
    IDE's open projects and deactivates when any one of them closes: counting holders lets that close end
    only its own hold, and the session ends when the last holder deactivates (or when it idles out).
    """
    live = await tokens.live_session_token(redis, user_id)
    if live is not None:
        await tokens.refresh_session(redis, live, user_id, settings.session_token_ttl_s)
        await tokens.hold_session(redis, live)
        return live
    row = Session(user_id=user_id)
    db.add(row)
    await db.flush()
    await db.commit()
    token = await tokens.issue_session(
        redis, user_id, row.session_id, auth_token, settings.session_token_ttl_s, settings.token_max_age_s
    )
    await tokens.hold_session(redis, token)
    return token


async def release(
    db: AsyncSession, redis: Redis, info: tokens.SessionInfo, token: str, *, signed_in: bool, address: str
) -> bool:
    """A client lets go of a session; True when that ended it (audited: its tokens end).

    A signed-in caller drops one hold and the session ends with the last; a caller whose auth token is gone
    (the plugin signs out by forgetting its auth token, then deactivates) ends it at once.
    """
    if signed_in and await tokens.release_session(redis, token) > 0:
        return False
    await audit.record(
        db,
        AuditAction.SESSION_END,
        actor=info.user_id,
        address=address,
        target=audit.Target("session", str(info.session_id)),
        detail={"signed_in": signed_in},
    )
    await deactivate(db, redis, info, token)
    return True


async def deactivate(db: AsyncSession, redis: Redis, info: tokens.SessionInfo, token: str) -> None:
    """End a session now (see `end`)."""
    await end(db, redis, token, info.user_id, info.session_id)


async def end(db: AsyncSession, redis: Redis, token: str, user_id: uuid.UUID, session_id: uuid.UUID) -> None:
    """The end of a session, however it came (deactivated, expired): its tokens go from Redis, its end time is
    written, and the live multi-file context of its projects that may not store context goes with it
    (projects whose members all consent keep it: it is indexed and lives on under its own lifetime)."""
    await tokens.end_session(redis, token, user_id)
    await db.execute(
        update(Session)
        .where(col(Session.session_id) == session_id, col(Session.end_time).is_(None))
        .values(end_time=utcnow())
    )
    projects = (
        (
            await db.execute(
                select(col(SessionProject.project_id)).where(col(SessionProject.session_id) == session_id)
            )
        )
        .scalars()
        .all()
    )
    for project_id in projects:
        if not await project_consents(db, project_id):
            await drop(redis, Owner(project_id, user_id))
    await db.commit()
