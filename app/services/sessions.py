"""Session acquire and deactivate: tokens in Redis, session rows in PostgreSQL."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from app import tokens
from app.settings import Settings
from db.tables import Session, utcnow


async def acquire(
    db: AsyncSession, redis: Redis, settings: Settings, user_id: uuid.UUID, auth_token: str
) -> str:
    """The user's live session token (refreshed), or a new session."""
    live = await tokens.live_session_token(redis, user_id)
    if live is not None:
        await tokens.refresh_session(redis, live, user_id, settings.session_token_ttl_s)
        return live
    row = Session(user_id=user_id)
    db.add(row)
    await db.flush()
    await db.commit()
    return await tokens.issue_session(redis, user_id, row.session_id, auth_token, settings.session_token_ttl_s)


async def deactivate(db: AsyncSession, redis: Redis, info: tokens.SessionInfo, token: str) -> None:
    """End a session: its tokens go from Redis and its end time is written."""
    await tokens.end_session(redis, token, info.user_id)
    await db.execute(
        update(Session)
        .where(Session.session_id == info.session_id, Session.end_time.is_(None))  # type: ignore[union-attr]
        .values(end_time=utcnow())
    )
    await db.commit()
