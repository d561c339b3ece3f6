"""A user's sign-ins (auth tokens and the plugin sessions acquired with them): listing, ending one, ending all
others (also after a password or email change), ending all (password reset)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.identity import tokens
from app.schemas.user import SignInPublic
from app.services import audit, sessions
from app.services.audit import AuditAction

NOT_FOUND = "Session not found"
AGENT_CHARS = 200


def client_agent(user_agent: str | None) -> str | None:
    """What is kept of a User-Agent header: printable characters, at most AGENT_CHARS."""
    if not user_agent:
        return None
    return "".join(ch for ch in user_agent if ch.isprintable())[:AGENT_CHARS] or None


def _time(epoch: float | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, UTC) if isinstance(epoch, (int, float)) else None


async def listed(redis: Redis, auth: tokens.AuthInfo, ttl_s: int) -> list[SignInPublic]:
    """The caller's live sign-ins, oldest first, the caller's own marked `current`."""
    return [
        SignInPublic(
            id=s.sign_in_id,
            created_at=_time(s.created_at),
            last_used_at=_time(s.last_used_at),
            client_address=s.client,
            user_agent=s.agent,
            current=s.digest == auth.digest,
            plugin_sessions=s.sessions,
        )
        for s in await tokens.sign_ins(redis, auth.user_id, ttl_s)
    ]


async def end_one(
    db: AsyncSession, redis: Redis, auth: tokens.AuthInfo, sign_in_id: str, ttl_s: int, *, address: str
) -> None:
    """End one of the caller's sign-ins (audited); 404 for an id that is not one of the caller's live sign-ins."""
    match = [s for s in await tokens.sign_ins(redis, auth.user_id, ttl_s) if s.sign_in_id == sign_in_id]
    if not match:
        raise NotFound(NOT_FOUND)
    await _record(db, auth, address, [match[0].sign_in_id], others=False)
    await sessions.close(db, redis, await tokens.revoke_sign_in(redis, auth.user_id, match[0].digest))


async def end_others(
    db: AsyncSession, redis: Redis, auth: tokens.AuthInfo, ttl_s: int, *, address: str
) -> int:
    """End every sign-in of the caller but this one ("sign out everywhere else", audited); how many."""
    others = [s for s in await tokens.sign_ins(redis, auth.user_id, ttl_s) if s.digest != auth.digest]
    await _record(db, auth, address, [s.sign_in_id for s in others], others=True)
    ended: list[tokens.SessionInfo] = []
    for other in others:
        ended += await tokens.revoke_sign_in(redis, auth.user_id, other.digest)
    await sessions.close(db, redis, ended)  # commits the record with the sessions' end
    return len(others)


async def _record(
    db: AsyncSession, auth: tokens.AuthInfo, address: str, ids: list[str], *, others: bool
) -> None:
    await audit.record(
        db,
        AuditAction.SIGN_IN_END,
        actor=auth.user_id,
        address=address,
        target=audit.user_target(auth.user_id),
        detail={"others": others, "count": len(ids), "sign_ins": ids[: audit.MAX_LIST_ITEMS]},
    )


async def end_all_but(db: AsyncSession, redis: Redis, user_id: uuid.UUID, keep: tokens.Digest | None) -> None:
    """End every token of the user (mailed links included) but the sign-in `keep` (None: all of them)."""
    await sessions.close(db, redis, await tokens.revoke_user(redis, user_id, keep=keep))
