"""A user's API tokens: create (the value is returned once), list, revoke."""

from __future__ import annotations

import uuid
from datetime import timedelta

from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.errors import Conflict, NotFound
from app.identity import api_tokens
from app.infra.settings import Settings
from app.schemas.api_token import ApiTokenCreate, ApiTokenCreated, ApiTokenPublic
from app.services import audit
from db.tables import ApiToken, utcnow


def public(row: ApiToken) -> ApiTokenPublic:
    """A token row as the user may see it (no value, no hash)."""
    return ApiTokenPublic(
        token_id=row.token_id,
        name=row.name,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
    )


async def create(
    db: AsyncSession, settings: Settings, user_id: uuid.UUID, body: ApiTokenCreate, *, address: str | None
) -> ApiTokenCreated:
    """Store a new token's hash; 409 when the user already holds MAX_API_TOKENS_PER_USER tokens."""
    held = (
        await db.execute(select(func.count()).select_from(ApiToken).where(col(ApiToken.user_id) == user_id))
    ).scalar_one()
    if held >= settings.max_api_tokens_per_user:
        raise Conflict(f"At most {settings.max_api_tokens_per_user} API tokens per user: revoke one first")
    value = api_tokens.new_api_token()
    now = utcnow()
    row = ApiToken(
        user_id=user_id,
        name=body.name,
        token_hash=api_tokens.token_hash(value),
        created_at=now,
        expires_at=now + timedelta(days=body.expires_in_days) if body.expires_in_days else None,
    )
    db.add(row)
    await db.flush()  # the row's id, for its audit record in the same transaction
    target = audit.Target("api_token", str(row.token_id))
    await audit.record(db, audit.AuditAction.API_TOKEN_CREATE, actor=user_id, address=address, target=target)
    await db.commit()
    return ApiTokenCreated(**public(row).model_dump(), token=value)


async def list_tokens(db: AsyncSession, user_id: uuid.UUID) -> list[ApiTokenPublic]:
    """The user's tokens, newest first."""
    rows = (
        await db.execute(
            select(ApiToken).where(col(ApiToken.user_id) == user_id).order_by(col(ApiToken.created_at).desc())
        )
    ).scalars()
    return [public(r) for r in rows]


async def revoke(
    db: AsyncSession,
    redis: Redis,
    settings: Settings,
    user_id: uuid.UUID,
    token_id: uuid.UUID,
    *,
    address: str | None,
) -> None:
    """Delete one of the user's tokens and its Redis copy; 404 for an unknown token or another user's."""
    row = await db.get(ApiToken, token_id)
    if row is None or row.user_id != user_id:
        raise NotFound("API token not found")
    hashed = row.token_hash
    await db.delete(row)
    target = audit.Target("api_token", str(token_id))
    await audit.record(db, audit.AuditAction.API_TOKEN_REVOKE, actor=user_id, address=address, target=target)
    await db.commit()
    await api_tokens.forget(redis, hashed, settings.api_token_cache_s)
