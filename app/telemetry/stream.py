"""The Redis stream between the ingress (producer) and the telemetry writers (a consumer group)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from app.telemetry.events import encode

STREAM = "c4m:telemetry:events"
GROUP = "writers"
DEAD = "c4m:telemetry:dead"
ATTEMPTS = "c4m:telemetry:attempts"
FIELD = b"e"


def chat_deleted_key(chat_id: object) -> str:
    """Tombstone of a deleted chat: writers drop its late events instead of writing them."""
    return f"c4m:chat_deleted:{chat_id}"


# Appends every argument as its own entry (field FIELD), in order, in one command. redis-py spends some 30 µs
# of the caller's CPU per pipelined command: one XADD per event was most of what telemetry cost a request.
# (Scripts replicate their effects since Redis 5, so the `*` ids are fine; one script runs atomically.)
_APPEND = (
    "for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', '" + FIELD.decode() + "', ARGV[i]) end return #ARGV"
)


def add_events(pipe: Pipeline | Redis, events: Iterable[Any]) -> None:
    """Queue the events' append on a pipeline (the caller executes it: one round trip for all): one
    command that adds one stream entry per event, in order."""
    payloads = [encode(event) for event in events]
    if payloads:
        pipe.execute_command("EVAL", _APPEND, 1, STREAM, *payloads)


async def publish(redis: Redis, events: Iterable[Any]) -> None:
    """Append events to the stream in one round trip."""
    pipe = redis.pipeline(transaction=False)
    add_events(pipe, events)
    await pipe.execute()


async def ensure_group(redis: Redis) -> None:
    """Create the consumer group (and the stream) once; existing groups are kept."""
    try:
        await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def stream_status(redis: Redis, dead_tail: int = 5) -> dict[str, Any]:
    """Backlog, pending, consumers and the latest dead letters (for `code4me status` and tests)."""
    await ensure_group(redis)
    length = await redis.xlen(STREAM)
    pending = await redis.xpending(STREAM, GROUP)
    consumers = await redis.xinfo_consumers(STREAM, GROUP)
    dead_len = await redis.xlen(DEAD)
    dead = await redis.xrevrange(DEAD, count=dead_tail)
    return {
        "backlog": int(length),
        "pending": int(pending["pending"]),
        "consumers": [
            {"name": _s(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
            for c in consumers
        ],
        "dead_letters": int(dead_len),
        "latest_dead": [
            {
                "id": _s(entry_id),
                "reason": _s((fields or {}).get(b"reason", b"")),
                "kind": _s((fields or {}).get(b"kind", b"")),
            }
            for entry_id, fields in dead or []
        ],
    }


async def wait_drained(redis: Redis, timeout_s: float = 30.0) -> None:
    """Return once every event appended so far has been written and acknowledged; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        # Writers delete entries after the commit, so an empty stream means nothing is left to write.
        if await redis.xlen(STREAM) == 0:
            return
        if time.monotonic() > deadline:
            status = await stream_status(redis)
            raise TimeoutError(
                f"telemetry stream not drained after {timeout_s} s: backlog {status['backlog']}, "
                f"pending {status['pending']} {status['consumers']}, latest dead letters {status['latest_dead']}"
            )
        await asyncio.sleep(0.02)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
