"""Per-user API tokens (`c4m_…`) for the /v1 routes: made, hashed, and resolved through a short Redis copy.

PostgreSQL keeps only the SHA-256 of a token (the value is random, 256 bits: a fast hash is enough, and a
leaked table authenticates nobody). A replica resolves a token by its hash: from the Redis copy when one is
kept (`API_TOKEN_CACHE_S`), else from PostgreSQL in one statement that also touches `last_used_at`, and then
keeps the copy. A token PostgreSQL does not know (or no longer: revoked, expired) is remembered as invalid
for `API_TOKEN_INVALID_CACHE_S` under the same key: a client retrying with it (an agent polling its health
with a revoked token) is refused from Redis. Safe, because a token never becomes valid later: a new token is a
new random value. Revoking a token deletes its row and its copy; deleting an account deletes the rows (cascade)
and every copy (they are indexed under the user, so `tokens.revoke_user` finds them).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.identity import tokens

# Secret scanners (GitHub's, detect-secrets' keyword rules, gitleaks) match tokens by a fixed prefix.
API_TOKEN_PREFIX = "c4m_"
_BODY_CHARS = 43  # secrets.token_urlsafe(32)


def new_api_token() -> str:
    """A fresh token value: the prefix and 256 random bits, URL-safe."""
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def looks_like_api_token(value: str) -> bool:
    """Whether a bearer value has an API token's shape (other bearer values are the plugin's auth tokens)."""
    return value.startswith(API_TOKEN_PREFIX) and len(value) == len(API_TOKEN_PREFIX) + _BODY_CHARS


def token_hash(value: str) -> str:
    """The stored form of a token: its SHA-256 in hex."""
    return hashlib.sha256(value.encode()).hexdigest()


def cache_key(hashed: str) -> str:
    """The Redis key of a token's copy, named by the keyed digest of its hash (as every token in Redis is:
    whoever reads Redis cannot match it against the hash PostgreSQL stores without SECRET_KEY)."""
    return f"{tokens.PREFIX}api_token:{tokens.digest(hashed)}"


def revoked_key(hashed: str) -> str:
    """The Redis key marking a token revoked: a lookup that read its row just before cannot copy it back."""
    return f"{tokens.PREFIX}api_token_revoked:{tokens.digest(hashed)}"


# KEYS: the copy, the revoked mark. ARGV: payload, ttl. The copy is kept only while the token is not revoked.
_KEEP_SCRIPT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class ApiTokenInfo:
    """What a valid API token stands for."""

    token_id: uuid.UUID
    user_id: uuid.UUID


# The Redis copy of a token PostgreSQL did not know.
INVALID = b"invalid"

_LOOKUP = text(
    "UPDATE api_token SET last_used_at = now() WHERE token_hash = :hash"
    " AND (expires_at IS NULL OR expires_at > now()) RETURNING token_id, user_id, expires_at"
)


async def resolve(
    redis: Redis,
    sessionmaker: async_sessionmaker[AsyncSession],
    value: str,
    cache_s: int,
    invalid_s: int = 0,
) -> ApiTokenInfo | None:
    """The user of a valid, unexpired API token; None for an unknown, revoked or expired one."""
    if not looks_like_api_token(value):
        return None
    hashed = token_hash(value)
    raw = await redis.get(cache_key(hashed))
    if raw == INVALID or raw == INVALID.decode():
        return None
    if raw is not None:
        data = json.loads(raw)
        expires = data.get("expires_at")
        if expires is None or datetime.fromisoformat(expires).timestamp() > _now():
            return ApiTokenInfo(uuid.UUID(data["token_id"]), uuid.UUID(data["user_id"]))
        return None
    async with sessionmaker() as db, db.begin():
        row = (await db.execute(_LOOKUP, {"hash": hashed})).first()
    if row is None:
        if invalid_s > 0:
            await redis.set(cache_key(hashed), INVALID, ex=invalid_s)
        return None
    token_id, user_id, expires_at = row
    life_s = cache_s if expires_at is None else min(cache_s, int(expires_at.timestamp() - _now()))
    if life_s > 0:
        payload = {
            "token_id": str(token_id),
            "user_id": str(user_id),
            "expires_at": expires_at.isoformat() if expires_at is not None else None,
        }
        async with redis.pipeline(transaction=True) as pipe:
            pipe.eval(_KEEP_SCRIPT, 2, cache_key(hashed), revoked_key(hashed), json.dumps(payload), life_s)
            tokens.index_for_user(pipe, user_id, cache_key(hashed), life_s)
            kept, _ = await pipe.execute()
        if not kept:
            return None  # revoked while it was being looked up
    return ApiTokenInfo(token_id, user_id)


async def forget(redis: Redis, hashed: str, cache_s: int) -> None:
    """Drop a revoked token's Redis copy, and keep lookups in flight from copying it back."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(revoked_key(hashed), "1", ex=cache_s + 5)
        pipe.delete(cache_key(hashed))
        await pipe.execute()


def _now() -> float:
    return time.time()
