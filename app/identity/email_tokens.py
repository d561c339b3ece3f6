"""Single-use, expiring tokens sent by mail (email verification, password reset), kept hashed in Redis."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from app.identity.tokens import PREFIX, digest, index_for_user, new_token

Purpose = Literal["verify", "reset"]


@dataclass(frozen=True)
class EmailTokenInfo:
    """Who a mailed token was issued to, and for which address (a later email change voids it)."""

    user_id: uuid.UUID
    email: str


def token_key(purpose: Purpose, token: str) -> str:
    """Redis key of a mailed token: only its keyed digest is stored (as for every token), so a Redis dump
    reveals no usable link."""
    return f"{PREFIX}email:{purpose}:{digest(token)}"


async def issue(redis: Redis, purpose: Purpose, user_id: uuid.UUID, email: str, ttl_s: int) -> str:
    """A new token for the user and address, valid for ttl_s seconds."""
    token = new_token()
    key = token_key(purpose, token)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, json.dumps({"user_id": str(user_id), "email": email}), ex=ttl_s)
        # Indexed with the user's other tokens: deleting the account or resetting the password voids it too.
        index_for_user(pipe, user_id, key, ttl_s)
        await pipe.execute()
    return token


async def spend_like_issue(redis: Redis, purpose: Purpose) -> None:
    """The Redis work of issue() on throwaway keys that expire at once, for paths that must not reveal (by
    their timing either) that no token was issued."""
    key = token_key(purpose, new_token())
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, json.dumps({"user_id": str(uuid.uuid4()), "email": ""}), px=1)
        index_for_user(pipe, uuid.uuid4(), key, 1)
        await pipe.execute()


def _parse(raw: bytes | str | None) -> EmailTokenInfo | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return EmailTokenInfo(uuid.UUID(data["user_id"]), str(data["email"]))
    except (ValueError, KeyError, TypeError):
        return None


async def peek(redis: Redis, purpose: Purpose, token: str) -> EmailTokenInfo | None:
    """What a token stands for, without using it up (to show a form only for a live link)."""
    if not token:
        return None
    return _parse(await redis.get(token_key(purpose, token)))


async def consume(redis: Redis, purpose: Purpose, token: str) -> EmailTokenInfo | None:
    """Use a token up (GETDEL: of two concurrent uses exactly one succeeds); None if unknown or expired."""
    if not token:
        return None
    return _parse(await redis.getdel(token_key(purpose, token)))
