"""The ContextIndexer core: live files marked dirty in Redis are chunked, embedded and upserted into pgvector.

Plain async code, testable without Ray (deployments/context_indexer.py runs it in a named actor). The
update request marks a file dirty in the same Redis transaction as the edit (app.context.live_state);
`run_once` claims the files that are due, atomically so that two indexers never take the same mark:

* debounced per (project, user, file): due when quiet for `debounce_s`, or `max_wait_s` after the first
  unindexed change even while edits keep coming; many edits in a window cost one re-index;
* a chunk whose content hash is unchanged keeps its row and embedding; a changed chunk whose text exists
  elsewhere in the file (moved code) reuses that embedding; only new text is embedded;
* chunks past the file's new end are deleted; a file gone from the live state leaves no chunks;
* only projects whose members all consent are written; for any other project the indexer deletes what
  PostgreSQL still holds of it (consent withdrawn).

A mark whose indexing fails goes back into the dirty set, so PostgreSQL or embedder outages lose nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import Table, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.context.chunking import Chunk, chunk_lines
from app.context.consent import project_consents
from app.context.lexical import tsvector_literal
from app.context.live_state import (
    DIRTY_KEY,
    DIRTY_SINCE_KEY,
    Owner,
    dirty_member,
    parse_dirty_member,
    read_file,
)
from app.infra.encryption import chunk_aad
from app.infra.envelope import Keyring, Sealer
from db.tables import ContextChunk, utcnow

log = logging.getLogger(__name__)
_CHUNKS: Table = ContextChunk.__table__  # type: ignore[attr-defined]

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]

# Members quiet since ARGV[1] or dirty since ARGV[2] are taken out of both sets in one step.
_CLAIM = """
local out, seen = {}, {}
for _, key_and_bound in ipairs({{KEYS[1], ARGV[1]}, {KEYS[2], ARGV[2]}}) do
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key_and_bound[1], '-inf', key_and_bound[2], 'LIMIT', 0, ARGV[3])) do
    if not seen[m] then seen[m] = true; out[#out + 1] = m end
  end
end
for _, m in ipairs(out) do redis.call('ZREM', KEYS[1], m); redis.call('ZREM', KEYS[2], m) end
return out
"""


@dataclass
class IndexStats:
    """What one indexing pass did."""

    files: int = 0
    embedded: int = 0
    written: int = 0
    deleted: int = 0
    refused: int = 0  # files of projects without consent (nothing written, leftovers deleted)
    failed: int = 0
    embed_calls: int = 0

    def add(self, other: IndexStats) -> None:
        """Accumulate another pass's counts."""
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class ContextIndexer:
    """Indexes dirty live files of consenting projects into context_chunk."""

    redis: Redis
    sessionmaker: async_sessionmaker[AsyncSession]
    embed: Embed
    # Chunk contents are sealed, their lexemes and content hashes keyed (app/infra/encryption.py).
    keyring: Keyring
    debounce_s: float = 2.0
    max_wait_s: float = 30.0
    batch_files: int = 64
    embed_batch: int = 64
    clock: Callable[[], float] = time.time
    totals: IndexStats = field(default_factory=IndexStats)

    async def claim_due(self, now: float | None = None) -> list[tuple[Owner, str]]:
        """Take the files that are due out of the dirty sets (atomic: no other indexer gets them)."""
        now = self.clock() if now is None else now
        members = await self.redis.eval(  # type: ignore[misc]
            _CLAIM,
            2,
            DIRTY_KEY,
            DIRTY_SINCE_KEY,
            now - self.debounce_s,
            now - self.max_wait_s,
            self.batch_files,
        )
        return [parse_dirty_member(m) for m in members]

    async def pending(self) -> int:
        """Files marked dirty and not yet claimed."""
        return int(await self.redis.zcard(DIRTY_KEY))

    async def run_once(self, now: float | None = None) -> IndexStats:
        """Index every file that is due now; failed files are marked dirty again."""
        stats = IndexStats()
        due = await self.claim_due(now)
        consent: dict[uuid.UUID, bool] = {}
        for owner, path in due:
            try:
                if owner.project_id not in consent:
                    async with self.sessionmaker() as db:
                        consent[owner.project_id] = await project_consents(db, owner.project_id)
                if consent[owner.project_id]:
                    stats.add(await self.index_file(owner, path))
                else:
                    stats.refused += 1
                    stats.deleted += await self.forget_project(owner.project_id)
            except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the others
                # Never the content: type only.
                log.warning("indexing a context file failed (%s); it stays marked", type(exc).__name__)
                stats.failed += 1
                await self.redis.zadd(DIRTY_KEY, {dirty_member(owner, path): self.clock()}, nx=True)
                await self.redis.zadd(DIRTY_SINCE_KEY, {dirty_member(owner, path): self.clock()}, nx=True)
        self.totals.add(stats)
        return stats

    async def run_forever(self, stop: asyncio.Event, poll_s: float = 0.5) -> None:
        """Poll the dirty sets until `stop` is set; errors (Redis down) are logged and retried."""
        while not stop.is_set():
            try:
                stats = await self.run_once()
                busy = stats.files + stats.refused + stats.failed >= self.batch_files
            except Exception as exc:  # noqa: BLE001 - keep the loop alive through outages
                log.warning("context indexer pass failed (%s)", type(exc).__name__)
                busy = False
            if not busy:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=poll_s)
                except TimeoutError:
                    pass

    async def index_file(self, owner: Owner, path: str) -> IndexStats:
        """Bring one file's chunks in PostgreSQL in line with its live lines (consent is the caller's check)."""
        stats = IndexStats(files=1)
        lines = await read_file(self.redis, owner, path)
        chunks = chunk_lines(path, lines or [])
        async with self.sessionmaker() as db:
            rows = (
                await db.execute(
                    select(
                        _CHUNKS.c.chunk_index,
                        _CHUNKS.c.start_line,
                        _CHUNKS.c.end_line,
                        _CHUNKS.c.content_hash,
                        _CHUNKS.c.embedding,
                    ).where(_CHUNKS.c.project_id == owner.project_id, _CHUNKS.c.file_path == path)
                )
            ).all()
        stored = {r.chunk_index: (r.content_hash, r.start_line, r.end_line) for r in rows}
        known = {r.content_hash: r.embedding for r in rows if r.embedding is not None}
        # Stored hashes are keyed digests: an unkeyed SHA-256 of a chunk would confirm a guessed text.
        digests = {c.index: self.keyring.digest(c.text) for c in chunks}
        changed = [c for c in chunks if stored.get(c.index) != (digests[c.index], c.start_line, c.end_line)]
        fresh = list({digests[c.index]: c for c in changed if digests[c.index] not in known}.values())
        for start in range(0, len(fresh), self.embed_batch):
            batch = fresh[start : start + self.embed_batch]
            vectors = await self.embed([c.embedding_text() for c in batch])
            stats.embed_calls += 1
            if len(vectors) != len(batch):
                raise RuntimeError("embedder returned a different number of vectors")
            known.update({digests[c.index]: v for c, v in zip(batch, vectors, strict=True)})
        stats.embedded = len(fresh)
        async with self.sessionmaker() as db, db.begin():
            result = await db.execute(
                delete(ContextChunk).where(
                    ContextChunk.project_id == owner.project_id,  # type: ignore[arg-type]
                    ContextChunk.file_path == path,  # type: ignore[arg-type]
                    ContextChunk.chunk_index >= len(chunks),  # type: ignore[arg-type,operator]
                )
            )
            stats.deleted = _rowcount(result)
            if changed:
                await db.execute(_upsert(owner.project_id, changed, known, digests, self.keyring))
            stats.written = len(changed)
        return stats

    async def forget_project(self, project_id: uuid.UUID) -> int:
        """Delete every chunk of a project (consent withdrawn); returns how many."""
        async with self.sessionmaker() as db, db.begin():
            result = await db.execute(
                delete(ContextChunk).where(ContextChunk.project_id == project_id)  # type: ignore[arg-type]
            )
            return _rowcount(result)


def _rowcount(result: Any) -> int:
    """Rows a DELETE touched (CursorResult.rowcount; the generic Result type does not declare it)."""
    return int(result.rowcount or 0)


def chunk_row(
    project_id: uuid.UUID, c: Chunk, embedding: Any, keyring: Keyring, sealer: Sealer, now: datetime
) -> dict[str, Any]:
    """The context_chunk row of a chunk: its content sealed to its position, a keyed digest for its hash,
    keyed hashes for its lexemes (nothing of the text in clear)."""
    return {
        "project_id": project_id,
        "file_path": c.path,
        "chunk_index": c.index,
        "start_line": c.start_line,
        "end_line": c.end_line,
        "content": sealer.seal(c.text, chunk_aad(project_id, c.index, c.path)),
        "content_hash": keyring.digest(c.text),
        "embedding": embedding,
        "lexemes": tsvector_literal(c.text, keyring.lexeme),
        "updated_at": now,
    }


def _upsert(
    project_id: uuid.UUID,
    chunks: Sequence[Chunk],
    vectors: dict[str, Any],
    digests: dict[int, str],
    keyring: Keyring,
) -> Any:
    """One INSERT .. ON CONFLICT for the changed chunks of a file, keyed by position; the content sealed to
    its position, the lexemes keyed hashes."""
    now = utcnow()
    sealer = keyring.sealer()
    stmt = insert(ContextChunk).values(
        [chunk_row(project_id, c, vectors[digests[c.index]], keyring, sealer, now) for c in chunks]
    )
    cols = ("start_line", "end_line", "content", "content_hash", "embedding", "lexemes", "updated_at")
    return stmt.on_conflict_do_update(
        constraint="uq_context_chunk_position", set_={k: stmt.excluded[k] for k in cols}
    )
