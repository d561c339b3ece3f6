"""Superseding across ingress replicas: a newer completion request of a session cancels the older one.

The plugin sends a new request on every keystroke; the previous one's answer is useless by then. On one
replica the in-flight call is simply cancelled. With several ingress replicas the newer request may
land on another one, so every request also announces itself:

* `INCR c4m:supersede_seq:<session>` gives the request its place in the session's order, and the same
  Lua script PUBLISHes `<session> <seq>` on `c4m:supersede` (one round trip, run while the context
  snippets are fetched);
* every replica listens on the channel and cancels its in-flight call of that session when the
  announced number is higher than its own. Comparing numbers, not "any other request", keeps a late
  message of an older request from cancelling a newer one.

A cancelled call cancels its Serve handle calls, so the model replica drops the request from its queue or
stops generating its row; the superseded client gets 409.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from redis.exceptions import RedisError

from app.identity.tokens import PREFIX

log = logging.getLogger(__name__)

CHANNEL = f"{PREFIX}supersede"
SEQ_TTL_S = 24 * 3600  # longer than any session; refreshed by every request

_ANNOUNCE = """
local seq = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. seq)
return seq
"""


def seq_key(session_id: uuid.UUID) -> str:
    """Redis key of a session's request counter."""
    return f"{PREFIX}supersede_seq:{session_id}"


async def announce(redis: Any, session_id: uuid.UUID) -> int:
    """Number this request of the session and tell every replica about it; returns its number."""
    return int(await redis.eval(_ANNOUNCE, 1, seq_key(session_id), SEQ_TTL_S, CHANNEL, str(session_id)))


def cancel_older(inflight: dict[Any, Any], session_id: uuid.UUID, seq: int) -> bool:
    """Cancel this replica's in-flight call of the session if it is older than request `seq`."""
    current = inflight.get(session_id)
    if current is None or current.calls.done() or current.seq >= seq:
        return False
    current.superseded = True
    current.calls.cancel()
    return True


def parse(data: bytes | str) -> tuple[uuid.UUID, int] | None:
    """`<session> <seq>` from the channel; None for anything else."""
    text = data.decode() if isinstance(data, bytes) else data
    try:
        session, seq = text.split(" ")
        return uuid.UUID(session), int(seq)
    except ValueError:
        return None


async def listen(redis: Any, inflight: dict[Any, Any], ready: asyncio.Event | None = None) -> None:
    """Cancel superseded calls announced by any replica, until cancelled; reconnects after Redis errors."""
    delay = 0.1
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CHANNEL)
            if ready is not None:
                ready.set()
            delay = 0.1
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None or message.get("type") != "message":
                    continue
                parsed = parse(message["data"])
                if parsed is not None:
                    cancel_older(inflight, *parsed)
        except (RedisError, OSError) as exc:
            log.warning("supersede listener lost Redis (%s); retrying in %.1f s", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        finally:
            try:
                await pubsub.aclose()
            except (RedisError, OSError):
                pass
