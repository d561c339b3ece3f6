"""Re-encryption under the keyring's newest key, while the platform runs (`code4me rekey`).

Key rotation without downtime: (1) every process gets `ENCRYPTION_KEYS=new:...,old:...` (a redeploy: new
values are sealed under `new`, both keys read); (2) this pass rewrites every sealed value that is not under
`new` yet (older keys, and the version-0 plaintext rows of before migration 0010) in bounded batches,
each its own short transaction; (3) `old` is dropped from `ENCRYPTION_KEYS`.

Resumable by construction: a batch selects only values not under the primary key (the key id is read from
the stored header in SQL), walking the table's primary key, so a pass stopped anywhere (Ctrl-C, a crash, a
PostgreSQL restart) is finished by running it again, and a second full pass finds nothing to do. A value
changed meanwhile (the indexer rewrote a chunk) is left alone: the update only applies where the stored
bytes are still the ones that were read. Chunks get their lexemes and content hash recomputed under the new
key with their content. `remaining()` counts what is left under other keys: 0 before a key is dropped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from app.context.lexical import tsvector_literal
from app.infra.encryption import CONTEXT_CHUNK, SEALED, SealedColumns, aad
from app.infra.envelope import Keyring, Sealer, sealed_key_id
from db.engine import plain_url


@dataclass
class TableRekey:
    """What one pass did to one table."""

    table: str
    rows: int = 0  # rows rewritten
    values: int = 0  # sealed values rewritten
    changed_meanwhile: int = 0  # rows whose values changed between read and write (left as they are)
    batches: int = 0


def _stale(column: str) -> str:
    """SQL: the value is not sealed under the primary key ($1): plaintext of before 0010, or another key."""
    return (
        f"({column} IS NOT NULL AND (get_byte({column}, 0) = 0"
        f" OR substring({column} FROM 3 FOR get_byte({column}, 1)) <> $1::bytea))"
    )


def _select_sql(t: SealedColumns) -> str:
    """SQL: the next batch of rows holding a stale value, after the cursor ($3: from the start)."""
    stale = " OR ".join(_stale(c) for c in t.columns)
    keys = [c for c, _type in t.cursor]
    names = ", ".join(dict.fromkeys([*keys, *t.row_id, *t.columns]))
    after = ", ".join(f"${4 + i}::{typ}" for i, (_c, typ) in enumerate(t.cursor))
    return (
        f"SELECT {names} FROM {t.table} WHERE ($3::bool OR ({', '.join(keys)}) > ({after})) AND ({stale})"
        f" ORDER BY {', '.join(keys)} LIMIT $2"
    )


def _update_sql(t: SealedColumns) -> str:
    """SQL: the batch's new values, for rows that still hold exactly the bytes that were read (a row a
    concurrent writer changed, or one deleted meanwhile, is left alone)."""
    arrays = [f"${1 + i}::{typ}[]" for i, (_c, typ) in enumerate(t.cursor)]
    aliases = [f"k{i}" for i in range(len(t.cursor))]
    sets = []
    where = [f"t.{c} = u.k{i}" for i, (c, _typ) in enumerate(t.cursor)]
    for i, c in enumerate(t.columns):
        n = len(arrays) + 1
        arrays += [f"${n}::bytea[]", f"${n + 1}::bytea[]"]
        aliases += [f"old{i}", f"new{i}"]
        sets.append(f"{c} = u.new{i}")
        where.append(f"t.{c} IS NOT DISTINCT FROM u.old{i}")
    if t is CONTEXT_CHUNK:  # the derived index columns follow the content's key
        n = len(arrays) + 1
        arrays += [f"${n}::text[]", f"${n + 1}::text[]"]
        aliases += ["lex", "digest"]
        sets += ["lexemes = u.lex::tsvector", "content_hash = u.digest"]
    return (
        f"UPDATE {t.table} t SET {', '.join(sets)} FROM unnest({', '.join(arrays)}) AS u({', '.join(aliases)})"
        f" WHERE {' AND '.join(where)}"
    )


@dataclass
class Rekeyer:
    """Rewrites every sealed value under the keyring's primary key, `batch_size` rows per transaction."""

    database_url: str
    keyring: Keyring
    batch_size: int = 500
    pause_s: float = 0.0  # between batches: room for the request path on a busy database
    max_batches: int | None = None  # per run, over all tables: a bounded slice of the work (None: all of it)
    _budget: int | None = field(default=None, init=False, repr=False)

    async def run(self) -> list[TableRekey]:
        """One pass over every sealed table (or its first `max_batches` batches: run again to go on)."""
        conn = await asyncpg.connect(plain_url(self.database_url), timeout=10)
        self._budget = self.max_batches
        try:
            return [await self._table(conn, t) for t in SEALED]
        finally:
            await conn.close()

    async def remaining(self) -> dict[str, int]:
        """Rows per table that still hold a value not under the primary key (0 everywhere: older keys may go)."""
        conn = await asyncpg.connect(plain_url(self.database_url), timeout=10)
        try:
            out = {}
            for t in SEALED:
                stale = " OR ".join(_stale(c) for c in t.columns)
                out[t.table] = int(
                    await conn.fetchval(
                        f"SELECT count(*) FROM {t.table} WHERE {stale}", self._primary_id_bytes
                    )
                )
            return out
        finally:
            await conn.close()

    @property
    def _primary_id_bytes(self) -> bytes:
        return self.keyring.primary.key_id.encode("ascii")

    @property
    def _primary_id(self) -> str:
        return self.keyring.primary.key_id

    async def _table(self, conn: asyncpg.Connection, t: SealedColumns) -> TableRekey:
        stats = TableRekey(t.table)
        select, update = _select_sql(t), _update_sql(t)
        keys = [c for c, _type in t.cursor]
        after: list[Any] = [None] * len(keys)
        while self._budget is None or self._budget > 0:
            first = all(v is None for v in after)
            rows = await conn.fetch(select, self._primary_id_bytes, self.batch_size, first, *after)
            if not rows:
                return stats
            after = [rows[-1][c] for c in keys]
            # Decrypting and sealing a batch is CPU work: off this loop, as the request path would need.
            args, values = await asyncio.to_thread(self._reseal, t, rows, self.keyring.sealer())
            result = await conn.execute(update, *args)
            touched = int(result.split()[-1])
            stats.rows += touched
            stats.changed_meanwhile += len(rows) - touched
            stats.values += values
            stats.batches += 1
            if self._budget is not None:
                self._budget -= 1
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
        return stats

    def _reseal(self, t: SealedColumns, rows: list[asyncpg.Record], sealer: Sealer) -> tuple[list[Any], int]:
        """The update's arrays for a batch: per column the bytes read and their replacement."""
        keys: list[list[Any]] = [[] for _ in t.cursor]
        columns: list[tuple[list[bytes | None], list[bytes | None]]] = [([], []) for _ in t.columns]
        lexemes: list[str] = []
        digests: list[str] = []
        rewritten = 0
        primary = self._primary_id
        for r in rows:
            for values, (c, _type) in zip(keys, t.cursor, strict=True):
                values.append(r[c])
            rid = [r[c] for c in t.row_id]
            for (old, new), c in zip(columns, t.columns, strict=True):
                value: bytes | None = r[c]
                old.append(value)
                text = None if value is None else self.keyring.open(value, aad(t.table, c, *rid))
                if value is None or text is None or sealed_key_id(value) == primary:
                    new.append(value)
                else:
                    new.append(sealer.seal(text, aad(t.table, c, *rid)))
                    rewritten += 1
                if t is CONTEXT_CHUNK:  # one sealed column, never NULL: its index columns, under the new key
                    lexemes.append(tsvector_literal(text or "", self.keyring.lexeme))
                    digests.append(self.keyring.digest(text or ""))
        args: list[Any] = [*keys]
        for old, new in columns:
            args += [old, new]
        if t is CONTEXT_CHUNK:
            args += [lexemes, digests]
        return args, rewritten


def rekey_report(tables: list[TableRekey], remaining: dict[str, int], elapsed_s: float) -> str:
    """The lines `code4me rekey` prints."""
    lines = [
        f"  {s.table:<14} {s.rows:>8} rows, {s.values:>8} values rewritten in {s.batches} batches"
        + (f" ({s.changed_meanwhile} changed meanwhile, left as written)" if s.changed_meanwhile else "")
        for s in tables
    ]
    left = sum(remaining.values())
    lines.append(
        f"done in {elapsed_s:.1f} s; "
        + (
            "every sealed value is under the primary key: older keys can be dropped from ENCRYPTION_KEYS"
            if left == 0
            else f"{left} rows still hold values under other keys ({remaining}): is every process on the new"
            " ENCRYPTION_KEYS? Run `code4me rekey` again."
        )
    )
    return "\n".join(lines)


async def rekey(
    database_url: str, keyring: Keyring, batch_size: int = 500, pause_s: float = 0.0
) -> tuple[str, int]:
    """A full pass, then the count of what is left: (the report, rows still under other keys)."""
    began = time.monotonic()
    job = Rekeyer(database_url, keyring, batch_size=batch_size, pause_s=pause_s)
    tables = await job.run()
    remaining = await job.remaining()
    return rekey_report(tables, remaining, time.monotonic() - began), sum(remaining.values())
