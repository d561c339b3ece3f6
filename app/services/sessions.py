"""Session acquire and deactivate: tokens in Redis, session rows in PostgreSQL."""

from __future__ import annotations

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
    db: AsyncSession,
    redis: Redis,
    settings: Settings,
    auth: tokens.AuthInfo,
    auth_token: str,
    presented: str,
) -> str:
    """The caller's live session (renewed), or a new one; either way one more holder of it.

    Live is the session token the caller presents, if it is one of the user's, else the live session of the
    caller's sign-in (its auth token): the plugin acquires at every IDE project's start, shares the one
    session (and cookie jar) between the IDE's open projects, and after a restart has only its auth token.
    It deactivates when any one project closes: counting holders lets that close end only its own hold, and
    the session ends when the last holder deactivates (or when it idles out).
    """
    live_token = presented
    live = await tokens.resolve_session(redis, live_token) if live_token else None
    if live is None or live.user_id != auth.user_id:
        live_token = await tokens.live_session_of(redis, auth_token) or ""
        live = await tokens.resolve_session(redis, live_token) if live_token else None
    if live is not None and live.user_id == auth.user_id:
        await tokens.refresh_session(redis, live_token, auth.user_id, settings.session_token_ttl_s)
        await tokens.hold_session(redis, live.digest)
        return live_token
    row = Session(user_id=auth.user_id)
    db.add(row)
    await db.flush()
    await db.commit()
    token = await tokens.issue_session(
        redis,
        auth.user_id,
        row.session_id,
        auth_token,
        settings.session_token_ttl_s,
        settings.token_max_age_s,
    )
    await tokens.hold_session(redis, tokens.digest(token))
    return token


async def release(
    db: AsyncSession, redis: Redis, info: tokens.SessionInfo, *, signed_in: bool, address: str
) -> bool:
    """A client lets go of a session; True when that ended it (audited: its tokens end).

    A signed-in caller drops one hold and the session ends with the last; a caller whose auth token is gone
    (the plugin signs out by forgetting its auth token, then deactivates) ends it at once.
    """
    if signed_in and await tokens.release_session(redis, info.digest) > 0:
        return False
    await audit.record(
        db,
        AuditAction.SESSION_END,
        actor=info.user_id,
        address=address,
        target=audit.Target("session", str(info.session_id)),
        detail={"signed_in": signed_in},
    )
    await end(db, redis, info)
    return True


async def end(db: AsyncSession, redis: Redis, info: tokens.SessionInfo) -> None:
    """The end of a session, however it came (deactivated, expired): its tokens go from Redis, then `close`."""
    await tokens.end_session(redis, info.digest)
    await close(db, redis, [info])


async def close(db: AsyncSession, redis: Redis, ended: list[tokens.SessionInfo]) -> None:
    """What follows sessions whose tokens are gone from Redis: their end time is written, and the live
    multi-file context of their projects that may not store context goes with them (projects whose members
    all consent keep it: it is indexed and lives on under its own lifetime)."""
    for info in ended:
        await db.execute(
            update(Session)
            .where(col(Session.session_id) == info.session_id, col(Session.end_time).is_(None))
            .values(end_time=utcnow())
        )
        projects = (
            (
                await db.execute(
                    select(col(SessionProject.project_id)).where(
                        col(SessionProject.session_id) == info.session_id
                    )
                )
            )
            .scalars()
            .all()
        )
        for project_id in projects:
            if not await project_consents(db, project_id):
                await drop(redis, Owner(project_id, info.user_id))
    await db.commit()
