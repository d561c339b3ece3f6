"""The telemetry writer: reads the stream as one consumer of a group, bulk-inserts, acknowledges after commit.

Guarantees: an entry is acknowledged (and deleted) only after its rows are committed; rows are keyed, so
replays are harmless; an entry whose parent row is not there yet (feedback before its generation) stays
pending and is retried; a PostgreSQL outage only delays writing; entries that keep failing for another
reason go to the dead-letter stream with the reason. A restarted writer first resumes its own pending
entries, and entries left pending by a writer that never came back are claimed after `claim_idle_ms`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.errors import log_sanitised
from app.infra.encryption import (
    context_aad,
    generation_aad,
    ground_truth_aad,
    keyring_for,
    message_aad,
    title_aad,
)
from app.infra.envelope import Keyring, Sealer
from app.infra.settings import get_settings
from app.telemetry import rows as R
from app.telemetry.events import (
    ChatEvent,
    ChatMessageEvent,
    FeedbackEvent,
    GenerationEvent,
    QueryEvent,
    ShownEvent,
    decode,
)
from app.telemetry.stream import ATTEMPTS, DEAD, FIELD, GROUP, STREAM, chat_deleted_key, ensure_group
from db.engine import plain_url
from db.tables import Chat, Generation, MetaQuery, Project, Session, User

log = logging.getLogger(__name__)

# Only errors that say "the server or the connection is gone": asyncpg's DataError (a bad value) is an
# InterfaceError too, and must count as a failure of the event, not as an outage to wait out.
TRANSIENT = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    RedisConnectionError,
    RedisTimeoutError,
)


def tune_gc_for_writer_process() -> None:
    """Garbage-collector settings for a process that runs a writer and little else (the Ray actor's worker,
    the benchmark's writer process); not for a process shared with other work.

    A batch of 2,000 events allocates some 40,000 objects, none of them in a reference cycle. With the
    default threshold (700) the collector runs about 60 times per batch, and what is alive then (the
    whole batch) is traversed again and again: that doubled the decoding time. Collecting every
    50,000 allocations, with everything alive at start-up frozen out of the collector's way, removes it.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


@dataclass
class Entry:
    """One stream entry: its id, raw payload and decoded event (None when malformed)."""

    entry_id: bytes
    raw: bytes
    event: Any = None
    error: str | None = None

    @property
    def age_s(self) -> float:
        """Seconds since the entry was appended (stream ids start with the append time in ms)."""
        ms = int(self.entry_id.split(b"-", 1)[0])
        return max(0.0, time.time() - ms / 1000)


@dataclass
class Outcome:
    """What a batch write decided per entry."""

    done: list[Entry] = field(default_factory=list)
    deferred: list[Entry] = field(default_factory=list)
    dead: list[tuple[Entry, str]] = field(default_factory=list)
    dropped: int = 0


@dataclass
class WriterStats:
    """Counters a writer reports in its status."""

    written: int = 0
    deferred: int = 0
    dead_lettered: int = 0
    dropped_orphans: int = 0
    transient_errors: int = 0
    batches: int = 0
    copy_conflicts: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)


class TelemetryWriter:
    """One consumer of the telemetry stream's group, writing batches into PostgreSQL."""

    def __init__(
        self,
        redis_url: str,
        database_url: str,
        consumer: str,
        *,
        batch_size: int = 2000,
        block_ms: int = 500,
        retry_interval_s: float = 0.5,
        claim_idle_ms: int = 30_000,
        max_attempts: int = 5,
        defer_max_age_s: float = 3600.0,
        linger_ms: int = 50,
        copy_min_events: int = 100,
        copy_cooldown_batches: int = 5,
        pipeline_depth: int = 2,
        keyring: Keyring | None = None,
        keyring_fingerprint: str | None = None,
    ) -> None:
        # Stored code is sealed here, after the ingress redacted it (app/infra/encryption.py).
        self.keyring = keyring or keyring_for(get_settings())
        if keyring_fingerprint is not None and keyring_fingerprint != self.keyring.fingerprint:
            # The ingress that started this writer reads with other keys: rows would become unreadable there.
            raise RuntimeError("this process's ENCRYPTION_KEYS differ from the ingress's")
        self.redis = Redis.from_url(redis_url)
        self.database_url = plain_url(database_url)
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.retry_interval_s = retry_interval_s
        self.claim_idle_ms = claim_idle_ms
        self.max_attempts = max_attempts
        self.defer_max_age_s = defer_max_age_s
        self.linger_ms = linger_ms
        self.copy_min_events = copy_min_events
        self.copy_cooldown_batches = copy_cooldown_batches
        self.pipeline_depth = max(1, pipeline_depth)
        self._copy_cooldown = 0
        self.stats = WriterStats()
        self._conns: dict[int, asyncpg.Connection] = {}
        self._next_pending_scan = 0.0
        self._next_claim = 0.0
        self._stopping = asyncio.Event()

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Consume until stop(); survives Redis and PostgreSQL outages by retrying with backoff.

        Under a backlog (full batches) up to `pipeline_depth` batches are written at once, each in its own
        transaction on its own connection, so that PostgreSQL works on one while this process reads,
        decodes and encodes the next: the two are busy at the same time instead of taking turns. That is
        what `TELEMETRY_WRITERS` = 2 would do too (a child whose parent is in the other, uncommitted batch
        is deferred and retried like any early event). Pending scans and claims happen only when nothing
        is being written, so an entry is never in two batches at once.
        """
        backoff = 0.1
        inflight: list[tuple[asyncio.Task[Outcome], int]] = []  # batches being written (oldest first), slots
        await ensure_group(self.redis)
        while not self._stopping.is_set():
            try:
                entries = await (self._read_new() if inflight else self._next_batch())
                if entries:
                    slot = min(set(range(self.pipeline_depth)) - {s for _t, s in inflight})
                    inflight.append((asyncio.create_task(self.process(entries, slot)), slot))
                # No backlog (a short batch): finish everything before the next blocking read.
                while inflight and (len(inflight) >= self.pipeline_depth or len(entries) < self.batch_size):
                    task, _slot = inflight[0]
                    await task
                    inflight.pop(0)
                backoff = 0.1
            except TRANSIENT as exc:
                await _finish(
                    inflight
                )  # what they did not commit stays pending, read again by a pending scan
                self.stats.transient_errors += 1
                self.stats.last_error = f"{type(exc).__name__} (will retry)"
                await self._drop_connection()
                # Entries stay pending in Redis; the next pending scan picks them up again.
                self._next_pending_scan = 0.0
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                try:
                    await ensure_group(self.redis)  # a Redis that came back empty needs its group again
                except TRANSIENT:
                    pass
            except asyncio.CancelledError:
                for task, _slot in inflight:
                    task.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - the writer outlives any error (logged sanitised)
                await _finish(inflight)
                self._next_pending_scan = 0.0
                self.stats.last_error = type(exc).__name__
                log_sanitised(log, f"telemetry writer {self.consumer}: unexpected error", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        await _finish(inflight)
        await self.close()

    def stop(self) -> None:
        """Ask run() to return after the current batch."""
        self._stopping.set()

    async def close(self) -> None:
        """Release connections."""
        await self._drop_connection()
        await self.redis.aclose()

    async def _next_batch(self) -> list[Entry]:
        now = time.monotonic()
        if now >= self._next_pending_scan:
            # Our own pending entries first: deferred ones, and whatever a previous life of us left.
            self._next_pending_scan = now + self.retry_interval_s
            got = await self.redis.xreadgroup(GROUP, self.consumer, {STREAM: "0"}, count=self.batch_size)
            await self._ack_vanished(got)
            entries = await _decoded(got)
            if entries:
                return entries
        if now >= self._next_claim:
            self._next_claim = now + max(self.claim_idle_ms / 1000 / 2, 0.05)
            claimed = await self.redis.xautoclaim(
                STREAM,
                GROUP,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id="0-0",
                count=self.batch_size,
            )
            entries = [_entry(eid, fields) for eid, fields in claimed[1] if fields]
            if entries:
                return entries
        got = await self.redis.xreadgroup(
            GROUP, self.consumer, {STREAM: ">"}, count=self.batch_size, block=self.block_ms
        )
        entries = await _decoded(got)
        if entries and len(entries) < self.batch_size and self.linger_ms > 0:
            # Events trickle in: let more arrive, so one transaction writes many of them instead of each
            # request costing a transaction (and the CPU beside the request path that goes with it).
            await asyncio.sleep(self.linger_ms / 1000)
            entries += await self._read_new(self.batch_size - len(entries))
        return entries

    async def _read_new(self, count: int | None = None) -> list[Entry]:
        got = await self.redis.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=count or self.batch_size)
        return await _decoded(got)

    async def _ack_vanished(self, got: Any) -> None:
        """Pending entries already deleted from the stream (written by a previous life) are only acknowledged."""
        vanished = [eid for _s, items in (got or []) for eid, fields in items if not fields]
        if vanished:
            await self.redis.xack(STREAM, GROUP, *vanished)

    # ------------------------------------------------------------------ one batch

    async def process(self, entries: list[Entry], slot: int = 0) -> Outcome:
        """Write a batch (on connection number `slot`), then acknowledge what is committed and dead-letter
        what cannot be written."""
        outcome = Outcome()
        good: list[Entry] = []
        for e in entries:
            if e.error is not None:
                outcome.dead.append((e, e.error))
            else:
                good.append(e)
        good = await self._drop_deleted_chats(good, outcome)
        if good:
            try:
                part = await self._write(good, slot)
            except TRANSIENT:
                raise
            except Exception:  # noqa: BLE001 - find the poisonous entries one by one
                part = await self._write_one_by_one(good, slot)
            outcome.done += part.done
            outcome.deferred += part.deferred
            outcome.dead += part.dead
            outcome.dropped += part.dropped
        accounted = {e.entry_id for e in outcome.done + outcome.deferred} | {
            e.entry_id for e, _ in outcome.dead
        }
        for e in entries:
            if e.entry_id not in accounted:
                # A bug, not a data problem: keep the entry pending (retried, dead-lettered when old) and say so.
                log.error(
                    "telemetry writer left event %s (%s) undecided",
                    e.entry_id.decode(),
                    getattr(e.event, "kind", "?"),
                )
                outcome.deferred.append(e)
        for e in list(outcome.deferred):
            if e.age_s > self.defer_max_age_s:
                outcome.deferred.remove(e)
                outcome.dead.append((e, "the row it depends on never arrived"))
        await self._settle(outcome)
        self.stats.batches += 1
        return outcome

    async def _drop_deleted_chats(self, entries: list[Entry], outcome: Outcome) -> list[Entry]:
        """Events of a chat deleted meanwhile are acknowledged without writing (the user asked for it gone)."""
        chat_ids = {cid for e in entries if (cid := getattr(e.event, "chat_id", None)) is not None}
        if not chat_ids:
            return entries
        ordered = list(chat_ids)
        flags = await self.redis.mget([chat_deleted_key(cid) for cid in ordered])
        deleted = {cid for cid, flag in zip(ordered, flags, strict=True) if flag is not None}
        if not deleted:
            return entries
        kept = []
        for e in entries:
            if getattr(e.event, "chat_id", None) in deleted:
                outcome.done.append(e)
                outcome.dropped += 1
            else:
                kept.append(e)
        return kept

    async def _write_one_by_one(self, entries: list[Entry], slot: int = 0) -> Outcome:
        outcome = Outcome()
        for e in entries:
            try:
                part = await self._write([e], slot)
            except TRANSIENT:
                raise
            except Exception as exc:  # noqa: BLE001
                attempts = int(await self.redis.hincrby(ATTEMPTS, e.entry_id, 1))
                reason = f"{type(exc).__name__}: {_first_line(exc)}"
                if attempts >= self.max_attempts:
                    outcome.dead.append((e, f"failed {attempts} times: {reason}"))
                else:
                    outcome.deferred.append(e)
                continue
            outcome.done += part.done
            outcome.deferred += part.deferred
            outcome.dead += part.dead
            outcome.dropped += part.dropped
        return outcome

    async def _settle(self, outcome: Outcome) -> None:
        if outcome.dead:
            pipe = self.redis.pipeline(transaction=True)
            for e, reason in outcome.dead:
                kind = getattr(e.event, "kind", "unknown")
                pipe.xadd(
                    DEAD,
                    {
                        "reason": reason,
                        "kind": kind,
                        "source_id": e.entry_id,
                        "e": e.raw,
                        "failed_at": str(time.time()),
                    },
                )
                # The reason may quote values from the event: it stays in the dead-letter stream, not the log.
                log.warning("telemetry event %s (%s) dead-lettered", e.entry_id.decode(), kind)
            ids = [e.entry_id for e, _ in outcome.dead]
            pipe.xack(STREAM, GROUP, *ids)
            pipe.xdel(STREAM, *ids)
            pipe.hdel(ATTEMPTS, *ids)
            await pipe.execute()
            self.stats.dead_lettered += len(outcome.dead)
        if outcome.done:
            ids = [e.entry_id for e in outcome.done]
            pipe = self.redis.pipeline(transaction=True)
            pipe.xack(STREAM, GROUP, *ids)
            pipe.xdel(STREAM, *ids)
            await pipe.execute()
            self.stats.written += len(outcome.done)
        self.stats.deferred += len(outcome.deferred)
        self.stats.dropped_orphans += outcome.dropped

    async def _connection(self, slot: int = 0) -> asyncpg.Connection:
        conn = self._conns.get(slot)
        if conn is None or conn.is_closed():
            conn = self._conns[slot] = await asyncpg.connect(self.database_url, timeout=5)
        return conn

    async def _drop_connection(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            try:
                await asyncio.wait_for(conn.close(), timeout=1)
            except Exception:  # noqa: BLE001 - a dead connection may not close cleanly
                conn.terminate()

    async def _write(self, entries: list[Entry], slot: int = 0) -> Outcome:
        """All rows of a batch in one transaction, parents before children.

        Batches of at least `copy_min_events` are first tried with binary COPY (rows already there make
        it fail); a batch that fails so, a replay, is written again with INSERT ... ON CONFLICT, which
        is also used for the next `copy_cooldown_batches` batches, since replays come in runs.
        """
        conn = await self._connection(slot)
        if len(entries) >= self.copy_min_events and self._copy_cooldown == 0:
            try:
                async with conn.transaction():
                    return await _write_batch(conn, entries, self.keyring.sealer(), copy=True)
            except asyncpg.UniqueViolationError:
                self.stats.copy_conflicts += 1
                self._copy_cooldown = self.copy_cooldown_batches
        elif self._copy_cooldown:
            self._copy_cooldown -= 1
        async with conn.transaction():
            return await _write_batch(conn, entries, self.keyring.sealer(), copy=False)

    async def status(self) -> dict[str, Any]:
        """This writer's counters."""
        s = self.stats
        return {
            "consumer": self.consumer,
            "batch_size": self.batch_size,
            "written": s.written,
            "deferred": s.deferred,
            "dead_lettered": s.dead_lettered,
            "dropped_orphans": s.dropped_orphans,
            "transient_errors": s.transient_errors,
            "batches": s.batches,
            "copy_conflicts": s.copy_conflicts,
            "last_error": s.last_error,
            "uptime_s": round(time.time() - s.started_at, 1),
        }


async def _write_batch(
    conn: asyncpg.Connection, entries: list[Entry], sealer: Sealer, copy: bool = False
) -> Outcome:
    """Insert what can be inserted; entries whose parent row is missing are deferred. Code (context,
    messages, ground truths) is sealed by `sealer`, one data key for the batch.

    copy: new rows go in by binary COPY (a row already there raises asyncpg.UniqueViolationError),
    otherwise by INSERT ... ON CONFLICT (replays change nothing).
    """

    async def put(to: R.RowLayout, rows: list[tuple[Any, ...]]) -> None:
        if copy:
            await R.copy_rows(conn, to, rows)
        else:
            await R.insert_rows(conn, to, rows)

    out = Outcome()
    # Events of an account deleted meanwhile are dropped (its data must not come back), whatever their kind.
    owners = {u for e in entries if (u := getattr(e.event, "user_id", None)) is not None}
    users = await R.existing(conn, User, owners)
    by_kind: dict[str, list[Entry]] = {}
    for e in entries:
        owner = getattr(e.event, "user_id", None)
        if owner is not None and owner not in users:
            out.done.append(e)
            out.dropped += 1
            continue
        by_kind.setdefault(e.event.kind, []).append(e)
    chats = by_kind.get("chat", [])
    queries = by_kind.get("query", [])

    live_chats = chats
    out.done += chats
    projects = await R.existing(
        conn, Project, [e.event.project_id for e in chats + queries if e.event.project_id]
    )
    # Always INSERT, never COPY: a chat event again (a new title) updates the row.
    await R.insert_rows(conn, R.CHAT, [_chat_row(e.event, projects, sealer) for e in live_chats])

    known_chats = await R.existing(conn, Chat, [e.event.chat_id for e in queries if e.event.chat_id])
    sessions = await R.existing(conn, Session, [e.event.session_id for e in queries if e.event.session_id])
    live_queries: list[QueryEvent] = []
    for e in queries:
        q: QueryEvent = e.event
        if q.chat_id is not None and q.chat_id not in known_chats:
            out.deferred.append(e)
        else:
            live_queries.append(q)
            out.done.append(e)
    await put(R.CONTEXT, [_context_row(q, sealer) for q in live_queries if q.context])
    await put(R.CONTEXTUAL, [_contextual_row(q) for q in live_queries if q.contextual])
    await put(R.BEHAVIORAL, [_behavioral_row(q) for q in live_queries if q.behavioral])
    await put(R.META_QUERY, [_meta_row(q, sessions, projects) for q in live_queries])
    await put(
        R.COMPLETION_QUERY,
        [_completion_row(q) for q in live_queries if q.query_type == "completion"],
    )
    await put(
        R.CHAT_QUERY,
        [_chat_query_row(q) for q in live_queries if q.query_type == "chat"],
    )

    generations = by_kind.get("generation", [])
    messages = by_kind.get("chat_message", [])
    batch_queries = {q.meta_query_id for q in live_queries}
    known_queries = batch_queries | await R.existing(
        conn,
        MetaQuery,
        [
            e.event.meta_query_id
            for e in generations + messages
            if e.event.meta_query_id and e.event.meta_query_id not in batch_queries
        ],
    )
    ready_generations: list[GenerationEvent] = _split(
        generations, lambda ev: ev.meta_query_id in known_queries, out
    )
    feedback = by_kind.get("feedback", [])
    shown = by_kind.get("shown", [])
    batch_gens = {(ev.meta_query_id, ev.model_id) for ev in ready_generations}
    # Acceptance of a generation written in this very batch goes into its row: no UPDATE needed.
    accepted_now = {
        (e.event.meta_query_id, e.event.model_id) for e in feedback if e.event.was_accepted
    } & batch_gens
    await put(
        R.GENERATION,
        [
            _generation_row(ev, sealer, (ev.meta_query_id, ev.model_id) in accepted_now)
            for ev in ready_generations
        ],
    )

    msg_chats = await R.existing(conn, Chat, [e.event.chat_id for e in messages])
    ready_messages = _split(
        messages,
        lambda ev: (
            ev.chat_id in msg_chats and (ev.meta_query_id is None or ev.meta_query_id in known_queries)
        ),
        out,
    )
    await put(R.CHAT_MESSAGE, [_message_row(ev, sealer) for ev in ready_messages])

    known_gens = batch_gens | await R.existing(
        conn,
        Generation,
        [k for e in feedback + shown if (k := (e.event.meta_query_id, e.event.model_id)) not in batch_gens],
    )
    ready_feedback: list[FeedbackEvent] = _split(
        feedback, lambda ev: (ev.meta_query_id, ev.model_id) in known_gens, out
    )
    ready_shown: list[ShownEvent] = _split(
        shown, lambda ev: (ev.meta_query_id, ev.model_id) in known_gens, out
    )
    await put(
        R.GROUND_TRUTH,
        [_ground_truth_row(ev, sealer) for ev in ready_feedback if ev.ground_truth is not None],
    )
    accepted = [
        k
        for ev in ready_feedback
        if ev.was_accepted and (k := (ev.meta_query_id, ev.model_id)) not in accepted_now
    ]
    if accepted:
        await conn.execute(R.ACCEPT_SQL, [a[0] for a in accepted], [a[1] for a in accepted])
    if ready_shown:
        times: dict[tuple[uuid.UUID, int], list[datetime]] = {}
        for ev in ready_shown:
            times.setdefault((ev.meta_query_id, ev.model_id), []).append(ev.shown_at)
        keys = list(times)
        await conn.execute(
            R.SHOWN_SQL,
            [k[0] for k in keys],
            [k[1] for k in keys],
            ["{" + ",".join(f'"{t.isoformat()}"' for t in times[k]) + "}" for k in keys],
        )
    return out


def _split(entries: list[Entry], ready: Any, out: Outcome) -> list[Any]:
    """Events whose parents exist; the others are deferred."""
    result = []
    for e in entries:
        if ready(e.event):
            result.append(e.event)
            out.done.append(e)
        else:
            out.deferred.append(e)
    return result


def _chat_row(ev: ChatEvent, projects: set[uuid.UUID], sealer: Sealer) -> tuple[Any, ...]:
    return (
        ev.chat_id,
        ev.user_id,
        ev.project_id if ev.project_id in projects else None,
        sealer.seal(ev.title[:200], title_aad(ev.chat_id)),
        ev.created_at,
    )


def _context_row(q: QueryEvent, sealer: Sealer) -> tuple[Any, ...]:
    c = q.context
    assert c is not None
    return (
        c.context_id,
        sealer.seal_optional(c.prefix, context_aad("prefix", c.context_id)),
        sealer.seal_optional(c.suffix, context_aad("suffix", c.context_id)),
        c.file_name,
        sealer.seal_optional(c.selected_text, context_aad("selected_text", c.context_id)),
        R.as_json(c.context_files),
    )


def _contextual_row(q: QueryEvent) -> tuple[Any, ...]:
    c = q.contextual
    assert c is not None
    return (
        c.contextual_telemetry_id,
        c.version_id,
        c.trigger_type_id,
        c.language_id,
        c.file_path,
        c.caret_line,
        c.document_char_length,
        c.relative_document_position,
    )


def _behavioral_row(q: QueryEvent) -> tuple[Any, ...]:
    b = q.behavioral
    assert b is not None
    return (b.behavioral_telemetry_id, b.time_since_last_shown, b.time_since_last_accepted, b.typing_speed)


def _meta_row(q: QueryEvent, sessions: set[uuid.UUID], projects: set[uuid.UUID]) -> tuple[Any, ...]:
    # A session or project deleted meanwhile leaves the research row without it, as ON DELETE SET NULL would.
    return (
        q.meta_query_id,
        q.user_id,
        q.session_id if q.session_id in sessions else None,
        q.project_id if q.project_id in projects else None,
        q.context.context_id if q.context else None,
        q.contextual.contextual_telemetry_id if q.contextual else None,
        q.behavioral.behavioral_telemetry_id if q.behavioral else None,
        q.query_type,
        q.timestamp,
        q.total_serving_time_ms,
    )


def _completion_row(q: QueryEvent) -> tuple[Any, ...]:
    return (q.meta_query_id, R.as_json(q.stop_sequences))


def _chat_query_row(q: QueryEvent) -> tuple[Any, ...]:
    return (q.meta_query_id, q.chat_id, q.web_enabled)


def _generation_row(ev: GenerationEvent, sealer: Sealer, accepted: bool = False) -> tuple[Any, ...]:
    return (
        ev.meta_query_id,
        ev.model_id,
        sealer.seal(ev.completion, generation_aad(ev.meta_query_id, ev.model_id)),
        ev.generation_time_ms,
        ev.confidence,
        ev.token_logprobs,
        ev.error,
        ev.created_at,
        accepted,
    )


def _message_row(ev: ChatMessageEvent, sealer: Sealer) -> tuple[Any, ...]:
    content = sealer.seal(ev.content, message_aad(ev.message_id))
    return (ev.message_id, ev.chat_id, ev.meta_query_id, ev.role, content, ev.model_id, ev.created_at)


def _ground_truth_row(ev: FeedbackEvent, sealer: Sealer) -> tuple[Any, ...]:
    assert ev.ground_truth is not None
    truth = sealer.seal(ev.ground_truth, ground_truth_aad(ev.event_id))
    return (ev.event_id, ev.meta_query_id, ev.model_id, ev.timestamp, truth)


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    raw = fields.get(FIELD, b"")
    e = Entry(entry_id=entry_id, raw=raw)
    try:
        e.event = decode(raw)
    except ValidationError as exc:
        # Only where and what kind of error: pydantic's messages would echo the (private) input.
        errors = exc.errors(include_input=False)
        where, kind = (errors[0]["loc"], errors[0]["type"]) if errors else (None, None)
        e.error = f"malformed event: {exc.error_count()} error(s), first at {where} ({kind})"
    return e


async def _finish(inflight: list[tuple[asyncio.Task[Outcome], int]]) -> None:
    """Wait for the batches still being written (their errors are theirs: what failed stays pending)."""
    tasks = [t for t, _slot in inflight]
    inflight.clear()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.debug("telemetry batch failed beside another: %s", type(result).__name__)


_DECODE_SLICE = 50


async def _decoded(got: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply, decoded in slices with a yield to the event loop between them: a
    batch decoded while the previous one is written must not keep PostgreSQL waiting for the next statement."""
    if not got:
        return []
    _stream, items = got[0]
    out: list[Entry] = []
    for i in range(0, len(items), _DECODE_SLICE):
        if i:
            await asyncio.sleep(0)
        # Pending entries already deleted from the stream come back with empty fields: nothing to write.
        out += [_entry(eid, fields) for eid, fields in items[i : i + _DECODE_SLICE] if fields]
    return out


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""
