"""Auth, session and project tokens in Redis, with the old hierarchy: auth > session > project."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

PREFIX = "c4m:"


def new_token() -> str:
    """An unguessable URL-safe token."""
    return secrets.token_urlsafe(32)


def auth_key(token: str) -> str:
    """Redis key of an auth token."""
    return f"{PREFIX}auth:{token}"


def session_key(token: str) -> str:
    """Redis key of a session token."""
    return f"{PREFIX}session:{token}"


def project_key(token: str) -> str:
    """Redis key of a project token."""
    return f"{PREFIX}project:{token}"


def user_snapshot_key(user_id: uuid.UUID) -> str:
    """Redis key of the cached copy of a user's preference (the hot paths' read; PostgreSQL is the truth)."""
    return f"{PREFIX}user_snapshot:{user_id}"


def user_session_key(user_id: uuid.UUID) -> str:
    """Redis key pointing at the user's live session token (for reuse on acquire)."""
    return f"{PREFIX}user_session:{user_id}"


def session_projects_key(session_token: str) -> str:
    """Redis set of the project tokens issued under a session."""
    return f"{PREFIX}session_projects:{session_token}"


# A session's shadow outlives its token by this much, so the SessionReaper can still read what the
# token stood for after Redis expired it (expiry events carry only the key name).
SHADOW_GRACE_S = 24 * 3600


def session_shadow_key(token: str) -> str:
    """Redis copy of a session token's payload that outlives the token (for the expiry cascade)."""
    return f"{PREFIX}session_shadow:{token}"


def auth_sessions_key(auth_token: str) -> str:
    """Redis set of the session tokens acquired with an auth token (ended when it expires)."""
    return f"{PREFIX}auth_sessions:{auth_token}"


def user_tokens_key(user_id: uuid.UUID) -> str:
    """Redis sorted set of the keys of every token issued to a user (auth, session, project, mailed), by expiry."""
    return f"{PREFIX}user_tokens:{user_id}"


def project_tokens_key(project_id: uuid.UUID) -> str:
    """Redis set of the project tokens issued for a project (revoked together when it is deleted)."""
    return f"{PREFIX}project_tokens:{project_id}"


@dataclass(frozen=True)
class AuthInfo:
    """What an auth token stands for."""

    user_id: uuid.UUID


@dataclass(frozen=True)
class SessionInfo:
    """What a session token stands for."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    auth_token: str


@dataclass(frozen=True)
class ProjectInfo:
    """What a project token stands for."""

    user_id: uuid.UUID
    project_id: uuid.UUID
    session_token: str


def _json_object(raw: bytes | str | None) -> dict | None:
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


async def _get_json(redis: Redis, key: str) -> dict | None:
    return _json_object(await redis.get(key))


async def issue_auth(redis: Redis, user_id: uuid.UUID, ttl_s: int) -> str:
    """Store a new auth token for the user."""
    token = new_token()
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(auth_key(token), json.dumps({"user_id": str(user_id)}), ex=ttl_s)
        index_for_user(pipe, user_id, auth_key(token), ttl_s)
        await pipe.execute()
    return token


# Adds a key to its user's index scored by the key's expiry, prunes expired members and keeps the index
# alive as long as its longest-lived member, in one atomic step (EXPIRE ... GT would need Redis 7).
_INDEX_SCRIPT = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], math.floor(tonumber(last[2])) + 1)
return 1
"""


def index_for_user(pipe: Pipeline, user_id: uuid.UUID, key: str, ttl_s: int) -> None:
    """Queue, on a pipeline, remembering a key under its user (so that revoke_user finds it)."""
    now = time.time()
    pipe.eval(_INDEX_SCRIPT, 1, user_tokens_key(user_id), now + ttl_s, key, now)


async def resolve_auth(redis: Redis, token: str) -> AuthInfo | None:
    """The user behind an auth token, or None when it is unknown or expired."""
    data = await _get_json(redis, auth_key(token))
    return AuthInfo(uuid.UUID(data["user_id"])) if data else None


async def revoke_auth(redis: Redis, token: str) -> None:
    """Forget an auth token."""
    await redis.delete(auth_key(token))


async def live_session_token(redis: Redis, user_id: uuid.UUID) -> str | None:
    """The user's live session token, if its session key still exists."""
    token = await redis.get(user_session_key(user_id))
    if token is None:
        return None
    token = token.decode() if isinstance(token, bytes) else token
    return token if await redis.exists(session_key(token)) else None


async def issue_session(
    redis: Redis, user_id: uuid.UUID, session_id: uuid.UUID, auth_token: str, ttl_s: int
) -> str:
    """Store a new session token and make it the user's live session."""
    token = new_token()
    payload = {"user_id": str(user_id), "session_id": str(session_id), "auth_token": auth_token}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(session_key(token), json.dumps(payload), ex=ttl_s)
        pipe.set(session_shadow_key(token), json.dumps(payload), ex=ttl_s + SHADOW_GRACE_S)
        pipe.sadd(auth_sessions_key(auth_token), token)
        pipe.expire(auth_sessions_key(auth_token), ttl_s + SHADOW_GRACE_S)
        pipe.set(user_session_key(user_id), token, ex=ttl_s)
        index_for_user(pipe, user_id, session_key(token), ttl_s)
        await pipe.execute()
    return token


async def refresh_session(redis: Redis, token: str, user_id: uuid.UUID, ttl_s: int) -> None:
    """Extend a reused session's lifetime."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.expire(session_key(token), ttl_s)
        pipe.expire(session_shadow_key(token), ttl_s + SHADOW_GRACE_S)
        pipe.expire(user_session_key(user_id), ttl_s)
        index_for_user(pipe, user_id, session_key(token), ttl_s)  # its new expiry, or the index would drop it
        await pipe.execute()


def session_from(raw: bytes | str | None) -> SessionInfo | None:
    """A session key's stored value as SessionInfo (None when absent)."""
    data = _json_object(raw)
    if not data:
        return None
    return SessionInfo(uuid.UUID(data["user_id"]), uuid.UUID(data["session_id"]), data["auth_token"])


async def resolve_session(redis: Redis, token: str) -> SessionInfo | None:
    """The session behind a session token, or None."""
    return session_from(await redis.get(session_key(token)))


async def end_session(redis: Redis, token: str, user_id: uuid.UUID) -> None:
    """Remove a session token, its project tokens and the user's live-session pointer."""
    project_tokens = await redis.smembers(session_projects_key(token))
    keys = [session_key(token), session_projects_key(token), session_shadow_key(token)]
    keys += [project_key(t.decode() if isinstance(t, bytes) else t) for t in project_tokens]
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(*keys)
        # Only drop the pointer if it still points at this session.
        pipe.get(user_session_key(user_id))
        _, current = await pipe.execute()
    current = current.decode() if isinstance(current, bytes) else current
    if current == token:
        await redis.delete(user_session_key(user_id))


async def issue_project(
    redis: Redis, user_id: uuid.UUID, project_id: uuid.UUID, session_token: str, ttl_s: int
) -> str:
    """Store a project token under a session."""
    token = new_token()
    payload = {"user_id": str(user_id), "project_id": str(project_id), "session_token": session_token}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(project_key(token), json.dumps(payload), ex=ttl_s)
        pipe.sadd(session_projects_key(session_token), token)
        pipe.expire(session_projects_key(session_token), ttl_s)
        index_for_user(pipe, user_id, project_key(token), ttl_s)
        pipe.sadd(project_tokens_key(project_id), token)
        pipe.expire(project_tokens_key(project_id), ttl_s)
        await pipe.execute()
    return token


async def revoke_project_tokens(redis: Redis, project_id: uuid.UUID) -> int:
    """Forget every live token of a project; how many there were."""
    members = await redis.smembers(project_tokens_key(project_id))
    project_tokens = [t.decode() if isinstance(t, bytes) else t for t in members]
    keys = [project_tokens_key(project_id), *(project_key(t) for t in project_tokens)]
    await redis.delete(*keys)
    return len(project_tokens)


def project_from(raw: bytes | str | None) -> ProjectInfo | None:
    """A project key's stored value as ProjectInfo (None when absent)."""
    data = _json_object(raw)
    if not data:
        return None
    return ProjectInfo(uuid.UUID(data["user_id"]), uuid.UUID(data["project_id"]), data["session_token"])


async def resolve_project(redis: Redis, token: str) -> ProjectInfo | None:
    """The project behind a project token, or None."""
    return project_from(await redis.get(project_key(token)))


async def revoke_user(redis: Redis, user_id: uuid.UUID) -> None:
    """End every auth, session and project token of a user (account deleted or password reset)."""
    members = await redis.zrange(user_tokens_key(user_id), 0, -1)
    keys: list[str] = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
    session_prefix = session_key("")
    doomed: list[str] = [user_tokens_key(user_id), user_session_key(user_id), user_snapshot_key(user_id), *keys]
    auth_prefix = auth_key("")
    doomed += [auth_sessions_key(k[len(auth_prefix) :]) for k in keys if k.startswith(auth_prefix)]
    for key in keys:
        if key.startswith(session_prefix):
            token = key[len(session_prefix) :]
            project_tokens = await redis.smembers(session_projects_key(token))
            doomed += [session_projects_key(token), session_shadow_key(token)]
            doomed += [project_key(t.decode() if isinstance(t, bytes) else t) for t in project_tokens]
    await redis.delete(*doomed)
