"""Auth, session and project tokens in Redis, with the old hierarchy: auth > session > project.

Redis never holds a token itself, neither in a key name nor in a value (an AOF file or a dump would hand
out live sign-ins): every key is named by the token's `digest`, an HMAC under a key derived from
SECRET_KEY, and every reference from one token to another (a session's auth token, a project token's
session, the sets of tokens) holds digests. A client's token is hashed when it arrives; what Redis holds
cannot be turned back into one. Mailed tokens use the same digest (app/identity/email_tokens.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NewType

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.infra.settings import get_settings

PREFIX = "c4m:"
Digest = NewType("Digest", str)


def new_token() -> str:
    """An unguessable URL-safe token."""
    return secrets.token_urlsafe(32)


@lru_cache(maxsize=4)
def _digest_key(secret_key: str) -> bytes:
    # A key of its own for token digests, derived from SECRET_KEY (which may sign other things).
    return hmac.new(secret_key.encode(), b"code4me token digest v1", hashlib.sha256).digest()


def digest(token: str) -> Digest:
    """What Redis knows of a token: HMAC-SHA256 under a key derived from SECRET_KEY (hex).

    Keyed, so that whoever reads Redis cannot even check a guessed token against it without the secret.
    """
    key = _digest_key(get_settings().secret_key)
    return Digest(hmac.new(key, token.encode(), hashlib.sha256).hexdigest())


AUTH_PREFIX = f"{PREFIX}auth:"
SESSION_PREFIX = f"{PREFIX}session:"
PROJECT_PREFIX = f"{PREFIX}project:"


def auth_key(token: str) -> str:
    """Redis key of an auth token (named by its digest)."""
    return auth_key_of(digest(token))


def auth_key_of(d: Digest) -> str:
    """Redis key of the auth token with this digest."""
    return f"{AUTH_PREFIX}{d}"


def session_key(token: str) -> str:
    """Redis key of a session token (named by its digest)."""
    return session_key_of(digest(token))


def session_key_of(d: Digest) -> str:
    """Redis key of the session token with this digest."""
    return f"{SESSION_PREFIX}{d}"


def project_key(token: str) -> str:
    """Redis key of a project token (named by its digest)."""
    return project_key_of(digest(token))


def project_key_of(d: Digest) -> str:
    """Redis key of the project token with this digest."""
    return f"{PROJECT_PREFIX}{d}"


def digest_in(key: str, prefix: str) -> Digest | None:
    """The digest a key of this prefix is named by, or None for another kind of key."""
    return Digest(key[len(prefix) :]) if key.startswith(prefix) else None


def user_snapshot_key(user_id: uuid.UUID) -> str:
    """Redis key of the cached copy of a user's preference (the hot paths' read; PostgreSQL is the truth)."""
    return f"{PREFIX}user_snapshot:{user_id}"


def session_projects_key(session: Digest) -> str:
    """Redis set of the digests of the project tokens issued under a session."""
    return f"{PREFIX}session_projects:{session}"


# A session's shadow outlives its token by this much, so the SessionReaper can still read what the
# token stood for after Redis expired it (expiry events carry only the key name).
SHADOW_GRACE_S = 24 * 3600


def session_shadow_key(session: Digest) -> str:
    """Redis copy of a session token's payload that outlives the token (for the expiry cascade)."""
    return f"{PREFIX}session_shadow:{session}"


def session_holders_key(session: Digest) -> str:
    """Redis counter of the clients holding a session: each acquire adds one, each deactivate drops one."""
    return f"{PREFIX}session_holders:{session}"


def auth_sessions_key(auth: Digest) -> str:
    """Redis set of the digests of the session tokens acquired with an auth token (ended when it expires)."""
    return f"{PREFIX}auth_sessions:{auth}"


def auth_session_key(auth: Digest) -> str:
    """Redis key of the nonce from which a sign-in's live session token is derived (see `session_token_of`)."""
    return f"{PREFIX}auth_session:{auth}"


def user_tokens_key(user_id: uuid.UUID) -> str:
    """Redis sorted set of the keys of every token issued to a user (auth, session, project, mailed), by expiry."""
    return f"{PREFIX}user_tokens:{user_id}"


def project_tokens_key(project_id: uuid.UUID) -> str:
    """Redis set of the digests of the project tokens issued for a project (revoked together when it is deleted)."""
    return f"{PREFIX}project_tokens:{project_id}"


@dataclass(frozen=True)
class AuthInfo:
    """What an auth token stands for (and the token's digest)."""

    user_id: uuid.UUID
    digest: Digest


@dataclass(frozen=True)
class SessionInfo:
    """What a session token stands for: user, session row, the auth token it was acquired with (digests)."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    auth: Digest
    digest: Digest


@dataclass(frozen=True)
class ProjectInfo:
    """What a project token stands for; `session` is the digest of the session it was issued under."""

    user_id: uuid.UUID
    project_id: uuid.UUID
    session: Digest


def _json_object(raw: bytes | str | None) -> dict | None:
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


# Sliding expiry: a token's key lives `ttl` seconds past its last use, but never past its `cap` (epoch
# seconds in its payload, to the millisecond: when it was issued plus the token kind's maximum age). The script reads the keys
# and renews, in the same call, every key read with a ttl > 0 whose payload carries a cap; a token issued
# without a cap keeps its fixed lifetime. The caller's clock is passed in, so the script is deterministic.
_READ_RENEW_SCRIPT = """
local now = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local raw = redis.call('GET', key)
  out[i] = raw
  local ttl_ms = tonumber(ARGV[i + 1]) * 1000
  if raw and ttl_ms > 0 then
    local ok, data = pcall(cjson.decode, raw)
    if ok and type(data) == 'table' and type(data['cap']) == 'number' then
      local left_ms = math.floor((data['cap'] - now) * 1000)
      if left_ms < ttl_ms then ttl_ms = left_ms end
      if ttl_ms > 0 then redis.call('PEXPIRE', key, ttl_ms) end
    end
  end
end
return out
"""


async def read_renewing(redis: Redis, keys: list[str], ttls: list[int]) -> list[bytes | None]:
    """GET each key, renewing (EXPIRE) the capped tokens among them to their ttl; ttl 0 only reads."""
    script = redis.register_script(_READ_RENEW_SCRIPT)
    return list(await script(keys=keys, args=[repr(time.time()), *ttls]))


def _capped(payload: dict, max_age_s: int | None) -> dict:
    """The payload with its cap, the epoch second it may live to (none: a fixed lifetime, no renewals)."""
    return payload if max_age_s is None else {**payload, "cap": round(time.time() + max_age_s, 3)}


def _life(ttl_s: int, max_age_s: int | None) -> int:
    """How long what hangs on a token may have to live: its cap when it slides, else its fixed lifetime."""
    return max_age_s if max_age_s is not None else ttl_s


async def _get_json(redis: Redis, key: str, renew_s: int = 0) -> dict | None:
    if not renew_s:
        return _json_object(await redis.get(key))
    return _json_object((await read_renewing(redis, [key], [renew_s]))[0])


async def issue_auth(
    redis: Redis,
    user_id: uuid.UUID,
    ttl_s: int,
    max_age_s: int | None = None,
    *,
    client: str | None = None,
    agent: str | None = None,
) -> str:
    """Store a new auth token (a sign-in) for the user: it lives ttl_s past its last use, at most max_age_s
    (None: fixed). A sign-in has a public id of its own (never derived from the token), its time, and the
    client address and user agent it came from, so that its owner can tell sign-ins apart and end one."""
    token = new_token()
    key = auth_key(token)
    meta = {"sid": uuid.uuid4().hex, "issued": round(time.time(), 3), "client": client, "agent": agent}
    payload = _capped({"user_id": str(user_id), **meta}, max_age_s)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, json.dumps(payload), ex=min(ttl_s, _life(ttl_s, max_age_s)))
        index_for_user(pipe, user_id, key, _life(ttl_s, max_age_s))
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


async def resolve_auth(redis: Redis, token: str, renew_s: int = 0) -> AuthInfo | None:
    """The user behind an auth token, or None when it is unknown or expired; renew_s > 0 renews it (a use)."""
    d = digest(token)
    data = await _get_json(redis, auth_key_of(d), renew_s)
    return AuthInfo(uuid.UUID(data["user_id"]), d) if data else None


def session_token_of(auth_token: str, nonce: str) -> str:
    """A sign-in's session token: derived from its auth token and a stored nonce under the digest key.

    So the server can give a client that lost its session cookie (the plugin after an IDE restart keeps only
    its auth token) its live session again, while Redis holds neither token: the nonce alone, without the
    auth token and SECRET_KEY, yields nothing.
    """
    key = _digest_key(get_settings().secret_key)
    mac = hmac.new(key, f"session\0{auth_token}\0{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def live_session_of(redis: Redis, auth_token: str) -> str | None:
    """The live session token acquired with this auth token, if there is one."""
    nonce = await redis.get(auth_session_key(digest(auth_token)))
    if nonce is None:
        return None
    token = session_token_of(auth_token, _text(nonce))
    return token if await redis.exists(session_key(token)) else None


async def issue_session(
    redis: Redis,
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    auth_token: str,
    ttl_s: int,
    max_age_s: int | None = None,
) -> str:
    """Store a new session token acquired with an auth token, and make it that sign-in's live session
    (sliding expiry as for auth tokens).

    What hangs on the token (its shadow, the auth token's set and nonce) lives as long as the token can: up
    to its cap, so renewals on use never outlive them.
    """
    auth = digest(auth_token)
    nonce = new_token()
    token = session_token_of(auth_token, nonce)
    d = digest(token)
    payload = _capped({"user_id": str(user_id), "session_id": str(session_id), "auth": auth}, max_age_s)
    life = _life(ttl_s, max_age_s)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(auth_session_key(auth), nonce, ex=life)
        pipe.set(session_key_of(d), json.dumps(payload), ex=min(ttl_s, life))
        pipe.set(session_shadow_key(d), json.dumps(payload), ex=life + SHADOW_GRACE_S)
        pipe.sadd(auth_sessions_key(auth), d)
        _extend(pipe, auth_sessions_key(auth), life + SHADOW_GRACE_S)
        index_for_user(pipe, user_id, session_key_of(d), life)
        await pipe.execute()
    return token


def _extend(pipe: Pipeline, key: str, ttl_s: int) -> None:
    """Queue making a set key live at least ttl_s more (it may already live longer for an earlier member)."""
    pipe.eval(_EXTEND_SCRIPT, 1, key, ttl_s)


# EXPIRE ... GT needs Redis 7: keep the longer of the two lifetimes by hand (-1: a new key, no expiry yet).
_EXTEND_SCRIPT = """
local left = redis.call('TTL', KEYS[1])
if left == -1 or (left >= 0 and left < tonumber(ARGV[1])) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
"""


async def refresh_session(redis: Redis, token: str, user_id: uuid.UUID, ttl_s: int) -> None:
    """Renew a reused session (acquire): a capped one as on any use, an uncapped one to a new fixed lifetime."""
    d = digest(token)
    raw = (await read_renewing(redis, [session_key_of(d)], [ttl_s]))[0]
    data = _json_object(raw)
    if data is None or "cap" in data:
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.expire(session_key_of(d), ttl_s)
        pipe.expire(session_shadow_key(d), ttl_s + SHADOW_GRACE_S)
        pipe.expire(auth_session_key(Digest(data["auth"])), ttl_s)
        index_for_user(pipe, user_id, session_key_of(d), ttl_s)  # its new expiry, or the index would drop it
        await pipe.execute()


def session_from(raw: bytes | str | None, d: Digest) -> SessionInfo | None:
    """A session key's stored value (the key of digest `d`) as SessionInfo (None when absent)."""
    data = _json_object(raw)
    if not data:
        return None
    return SessionInfo(uuid.UUID(data["user_id"]), uuid.UUID(data["session_id"]), Digest(data["auth"]), d)


async def resolve_session(redis: Redis, token: str, renew_s: int = 0) -> SessionInfo | None:
    """The session behind a session token, or None; renew_s > 0 renews it (a use)."""
    d = digest(token)
    return session_from((await read_renewing(redis, [session_key_of(d)], [renew_s]))[0], d)


async def hold_session(redis: Redis, session: Digest) -> int:
    """Count one more holder of a session (an acquire); the counter lives as long as the session can."""
    life_s = math.ceil(await session_lifetime_left_ms(redis, session, 1) / 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(session_holders_key(session))
        pipe.expire(session_holders_key(session), life_s)
        holders, _ = await pipe.execute()
    return int(holders)


async def release_session(redis: Redis, session: Digest) -> int:
    """Count one holder less (a deactivate); how many still hold the session (0: end it)."""
    return max(0, int(await redis.decr(session_holders_key(session))))


async def session_lifetime_left_ms(redis: Redis, session: Digest, default_s: int) -> int:
    """How long a session can still live: to its cap when it slides, else its remaining fixed lifetime."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(session_key_of(session))
        pipe.pttl(session_key_of(session))
        raw, remaining = await pipe.execute()
    data = _json_object(raw) or {}
    cap = data.get("cap")
    if isinstance(cap, (int, float)):
        return max(1, int((cap - time.time()) * 1000))
    return int(remaining) if remaining and remaining > 0 else default_s * 1000


def _session_keys(session: Digest, project_tokens: set) -> list[str]:
    """Every key of a session: its token, shadow, holders, project set and project tokens."""
    return [
        session_key_of(session),
        session_projects_key(session),
        session_shadow_key(session),
        session_holders_key(session),
        *(project_key_of(Digest(_text(t))) for t in project_tokens),
    ]


async def end_session(redis: Redis, session: Digest) -> None:
    """Remove a session token and its project tokens."""
    await redis.delete(*_session_keys(session, await redis.smembers(session_projects_key(session))))


def activation_token(session_token: str, project_id: uuid.UUID) -> str:
    """The token under which a session's activation of a project is also stored (as its digest).

    The Code4me plugin sends the project's id as its `project_token` (its copy of the cookie comes last,
    so it wins over ours): a project id is accepted as a project token within the session that activated
    the project, and nowhere else (see `effective_project_token`).
    """
    return f"{session_token}:{project_id}"


def effective_project_token(project_token: str, session_token: str) -> str:
    """The stored token a client's project token stands for: a project id means this session's activation."""
    try:
        project_id = uuid.UUID(project_token)
    except ValueError:
        return project_token
    return activation_token(session_token, project_id) if session_token else project_token


async def issue_project(redis: Redis, user_id: uuid.UUID, project_id: uuid.UUID, session_token: str) -> str:
    """Store a project token under a session (also reachable by the project id within that session).

    A project activation lives as long as its session can (the session slides on use; when it ends, for
    whatever reason, `end_session` removes its project tokens): an IDE project left idle while another is
    used keeps working, and a project token is useless without its session token anyway.
    """
    token = new_token()
    session = digest(session_token)
    payload = {"user_id": str(user_id), "project_id": str(project_id), "session": session}
    life_ms = await session_lifetime_left_ms(redis, session, 1)
    life_s = math.ceil(life_ms / 1000)
    stored = [digest(token), digest(activation_token(session_token, project_id))]
    async with redis.pipeline(transaction=True) as pipe:
        for d in stored:
            pipe.set(project_key_of(d), json.dumps(payload), px=life_ms)
            index_for_user(pipe, user_id, project_key_of(d), life_s)
        pipe.sadd(session_projects_key(session), *stored)
        _extend(pipe, session_projects_key(session), life_s)
        pipe.sadd(project_tokens_key(project_id), *stored)
        _extend(pipe, project_tokens_key(project_id), life_s)
        await pipe.execute()
    return token


async def revoke_project_tokens(redis: Redis, project_id: uuid.UUID) -> int:
    """Forget every live token of a project; how many there were."""
    members = await redis.smembers(project_tokens_key(project_id))
    keys = [project_tokens_key(project_id), *(project_key_of(Digest(_text(m))) for m in members)]
    await redis.delete(*keys)
    return len(members)


def project_from(raw: bytes | str | None) -> ProjectInfo | None:
    """A project key's stored value as ProjectInfo (None when absent)."""
    data = _json_object(raw)
    if not data:
        return None
    return ProjectInfo(uuid.UUID(data["user_id"]), uuid.UUID(data["project_id"]), Digest(data["session"]))


async def resolve_project(redis: Redis, token: str) -> ProjectInfo | None:
    """The project behind a (stored) project token, or None."""
    return project_from(await redis.get(project_key(token)))


@dataclass(frozen=True)
class SignIn:
    """One live sign-in (auth token) of a user, as its owner may see it: never the token or its digest."""

    sign_in_id: str
    digest: Digest  # for the server only (which sign-in is the caller's, which to end)
    created_at: float | None
    last_used_at: float | None
    client: str | None
    agent: str | None
    sessions: int


async def _index(redis: Redis, user_id: uuid.UUID) -> list[str]:
    members: list[Any] = list(await redis.zrange(user_tokens_key(user_id), 0, -1))
    return [_text(m) for m in members]


async def sign_ins(redis: Redis, user_id: uuid.UUID, ttl_s: int) -> list[SignIn]:
    """The user's live sign-ins, oldest first. The last use is read off the key's expiry (each use renews it
    to ttl_s), so it is unknown (None) once the token's cap is nearer than its ttl."""
    auths = [d for d in (digest_in(k, AUTH_PREFIX) for k in await _index(redis, user_id)) if d is not None]
    async with redis.pipeline(transaction=False) as pipe:
        for d in auths:
            pipe.get(auth_key_of(d))
            pipe.pttl(auth_key_of(d))
            pipe.scard(auth_sessions_key(d))
        answers = await pipe.execute() if auths else []
    now = time.time()
    found = []
    for i, d in enumerate(auths):
        data, left_ms, sessions = _json_object(answers[3 * i]), answers[3 * i + 1], answers[3 * i + 2]
        if data is None or not data.get("sid") or left_ms is None or left_ms < 0:
            continue  # gone meanwhile, or issued before sign-ins had ids
        expires = now + left_ms / 1000
        cap = data.get("cap")
        last_used = expires - ttl_s if not isinstance(cap, (int, float)) or expires < cap - 1 else None
        found.append(
            SignIn(
                str(data["sid"]),
                d,
                data.get("issued"),
                last_used,
                data.get("client"),
                data.get("agent"),
                int(sessions),
            )
        )
    return sorted(found, key=lambda s: s.created_at or 0)


async def _doom(redis: Redis, keys: list[str]) -> tuple[list[str], list[SessionInfo]]:
    """Every key to delete with these token keys (what hangs on auth and session tokens included), and the
    sessions among them (read from their shadows, which outlive the tokens)."""
    doomed = list(keys)
    ended: list[SessionInfo] = []
    for key in keys:
        auth = digest_in(key, AUTH_PREFIX)
        if auth is not None:
            doomed += [auth_sessions_key(auth), auth_session_key(auth)]
        session = digest_in(key, SESSION_PREFIX)
        if session is not None:
            info = session_from(await redis.get(session_shadow_key(session)), session)
            if info is not None:
                ended.append(info)
            doomed += _session_keys(session, await redis.smembers(session_projects_key(session)))
    return doomed, ended


async def _sign_in_keys(redis: Redis, auth: Digest) -> list[str]:
    """The token keys of one sign-in: its auth token and the sessions acquired with it (their project tokens
    come with them in `_doom`)."""
    sessions = await redis.smembers(auth_sessions_key(auth))
    return [auth_key_of(auth), *(session_key_of(Digest(_text(s))) for s in sessions)]


async def revoke_sign_in(redis: Redis, user_id: uuid.UUID, auth: Digest) -> list[SessionInfo]:
    """End one sign-in: its auth token, the sessions acquired with it and their project tokens; the sessions
    it ended (app/services/sessions.py `close` writes their end)."""
    doomed, ended = await _doom(redis, await _sign_in_keys(redis, auth))
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(*doomed)
        pipe.zrem(user_tokens_key(user_id), *doomed)
        await pipe.execute()
    return ended


async def revoke_user(redis: Redis, user_id: uuid.UUID, keep: Digest | None = None) -> list[SessionInfo]:
    """End every auth, session, project and mailed token of a user (account deleted, password reset), or,
    with `keep`, all but that sign-in's (a password or email change keeps the caller signed in); the
    sessions it ended, for their rows and live context (app/services/sessions.py `close`)."""
    keys = await _index(redis, user_id)
    if keep is not None:
        kept = set(await _sign_in_keys(redis, keep))
        for key in list(kept):
            session = digest_in(key, SESSION_PREFIX)
            if session is not None:
                projects = await redis.smembers(session_projects_key(session))
                kept |= {project_key_of(Digest(_text(p))) for p in projects}
        keys = [k for k in keys if k not in kept]
    doomed, ended = await _doom(redis, keys)
    async with redis.pipeline(transaction=True) as pipe:
        if keep is None:
            pipe.delete(user_tokens_key(user_id), user_snapshot_key(user_id), *doomed)
        elif doomed:
            pipe.delete(*doomed)
            pipe.zrem(user_tokens_key(user_id), *doomed)
        await pipe.execute()
    return ended


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
