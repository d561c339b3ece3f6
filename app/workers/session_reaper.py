"""The session expiry cascade: when Redis expires a session or auth token, end everything that hung on it.

Listens to Redis key-expiry events (`notify-keyspace-events Ex`) and, because events are fire-and-forget
(a reaper that was down misses them), also sweeps session shadows whose token is gone. For an ended
session: its project tokens go, the session row gets its end time,
and the live multi-file context of projects that may not store context is dropped (projects whose members
all consent keep it: it is already indexed and lives on under its own lifetime).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.identity import tokens
from app.services import sessions
from db.engine import make_engine, make_sessionmaker

log = logging.getLogger(__name__)


class SessionReaper:
    """Ends sessions whose tokens expired; one per cluster (a named Ray actor), idempotent if there are more."""

    def __init__(self, redis_url: str, database_url: str, *, sweep_interval_s: float = 30.0) -> None:
        self.redis = Redis.from_url(redis_url)
        self.engine = make_engine(database_url, pool_size=1)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.sweep_interval_s = sweep_interval_s
        self.ended = 0
        self.last_error: str | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Listen and sweep until stop(); survives Redis and PostgreSQL outages."""
        while not self._stopping.is_set():
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a restart of Redis must not end the reaper
                self.last_error = type(exc).__name__
                log.warning("session reaper: %s; retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
        await self.close()

    def stop(self) -> None:
        """Ask run() to return."""
        self._stopping.set()

    async def close(self) -> None:
        """Release connections."""
        await self.redis.aclose()
        await self.engine.dispose()

    async def _listen(self) -> None:
        await self._enable_notifications()
        pubsub = self.redis.pubsub()
        db = int(self.redis.connection_pool.connection_kwargs.get("db", 0) or 0)
        await pubsub.subscribe(f"__keyevent@{db}__:expired")  # this database's expiries only
        try:
            await self.sweep()
            next_sweep = time.monotonic() + self.sweep_interval_s
            while not self._stopping.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None:
                    await self.on_expired(_text(message["data"]))
                if time.monotonic() >= next_sweep:
                    await self.sweep()
                    next_sweep = time.monotonic() + self.sweep_interval_s
        finally:
            await pubsub.aclose()

    async def _enable_notifications(self) -> None:
        """Expiry events must be on; a managed Redis that refuses CONFIG still gets the periodic sweep."""
        try:
            current = _text(
                (await self.redis.config_get("notify-keyspace-events")).get("notify-keyspace-events", "")
            )
            if not ("E" in current and ("x" in current or "A" in current)):
                await self.redis.config_set("notify-keyspace-events", current + "Ex")
        except (ResponseError, RedisConnectionError) as exc:
            log.warning(
                "session reaper: cannot enable expiry events (%s); relying on the sweep", type(exc).__name__
            )

    async def on_expired(self, key: str) -> None:
        """React to one expired key (others than session and auth tokens are ignored); keys are named by
        token digests, which is all the cascade needs."""
        session = tokens.digest_in(key, tokens.SESSION_PREFIX)
        if session is not None:
            await self.end_session(session)
            return
        auth = tokens.digest_in(key, tokens.AUTH_PREFIX)
        if auth is not None:
            await self.end_sessions_of_auth(auth)

    async def end_sessions_of_auth(self, auth: tokens.Digest) -> None:
        """An auth token expired: every session acquired with it ends too."""
        members = await self.redis.smembers(tokens.auth_sessions_key(auth))
        for member in members:
            session = tokens.Digest(_text(member))
            await self.redis.delete(tokens.session_key_of(session))
            await self.end_session(session)
        await self.redis.delete(tokens.auth_sessions_key(auth))

    async def end_session(self, session: tokens.Digest) -> bool:
        """The cascade for one session token that is gone; False when there was nothing (left) to do."""
        info = tokens.session_from(await self.redis.get(tokens.session_shadow_key(session)), session)
        if info is None:
            return False
        if await self.redis.exists(tokens.session_key_of(session)):
            return False  # refreshed meanwhile: still alive
        async with self.sessionmaker() as db:
            # Project tokens, shadow, end time, and the live files of projects without consent.
            await sessions.end(db, self.redis, info)
        self.ended += 1
        return True

    async def sweep(self) -> int:
        """End every session whose token is gone but whose shadow is still there (missed events)."""
        ended = 0
        shadow_prefix = tokens.session_shadow_key(tokens.Digest(""))
        async for key in self.redis.scan_iter(match=f"{shadow_prefix}*", count=500):
            session = tokens.Digest(_text(key)[len(shadow_prefix) :])
            if not await self.redis.exists(tokens.session_key_of(session)) and await self.end_session(
                session
            ):
                ended += 1
        return ended

    def status(self) -> dict[str, Any]:
        """Counters for `code4me status`."""
        return {"sessions_ended": self.ended, "last_error": self.last_error}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
