"""Bulk writes of telemetry rows with asyncpg, one statement per table per batch, in two ways.

* `copy_rows`: a binary COPY straight into the table, the fast path for batches of new events. It is
  idempotent too, in its own way: every table it writes has a unique key on the event's id, so a row
  that is already there makes the COPY (and with it the batch's transaction) fail instead of writing it
  twice; the writer then writes that batch again with `insert_rows`.
* `insert_rows`: `INSERT ... SELECT FROM unnest(...) ON CONFLICT` on the row's key, so writing a replayed
  batch changes nothing.

Rows are tuples in the tables' column order; JSONB values are JSON text, float8[] values are lists.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Col:
    """A column: its name, the array type its values travel in, and the cast applied per row."""

    name: str
    sql_type: str
    cast: str | None = None


def _insert_sql(table: str, cols: Sequence[Col], conflict: str) -> str:
    names = ", ".join(f'"{c.name}"' for c in cols)
    params = ", ".join(f"${i + 1}::{c.sql_type}[]" for i, c in enumerate(cols))
    aliases = ", ".join(f"c{i}" for i in range(len(cols)))
    picks = ", ".join(f"c{i}::{c.cast}" if c.cast else f"c{i}" for i, c in enumerate(cols))
    return f'INSERT INTO "{table}" ({names}) SELECT {picks} FROM unnest({params}) AS u({aliases}) {conflict}'


async def insert_rows(
    conn: asyncpg.Connection,
    table: str,
    cols: Sequence[Col],
    rows: Sequence[Sequence[Any]],
    conflict: str = "ON CONFLICT DO NOTHING",
) -> None:
    """Insert many rows of one table in one statement (nothing when rows is empty)."""
    if not rows:
        return
    columns = [list(values) for values in zip(*rows, strict=True)]
    for i, c in enumerate(cols):
        if c.cast == "float8[]":  # arrays of arrays cannot travel through unnest: one literal per row
            columns[i] = [as_float_array(v) for v in columns[i]]
    await conn.execute(_insert_sql(table, cols, conflict), *columns)


async def copy_rows(
    conn: asyncpg.Connection, table: str, cols: Sequence[Col], rows: Sequence[Sequence[Any]]
) -> None:
    """Binary COPY of many rows into one table (nothing when rows is empty); a key already there raises
    asyncpg.UniqueViolationError and aborts the transaction."""
    if not rows:
        return
    await conn.copy_records_to_table(table, records=rows, columns=[c.name for c in cols])


def as_json(value: Any) -> str | None:
    """A JSONB value as text (None stays SQL NULL)."""
    return None if value is None else json.dumps(value)


def as_float_array(values: Iterable[float] | None) -> str | None:
    """A float8[] literal for one row (arrays of arrays cannot travel through unnest)."""
    if values is None:
        return None
    return "{" + ",".join(repr(float(v)) for v in values) + "}"


async def existing(
    conn: asyncpg.Connection, table: str, key: str, ids: Iterable[Any], sql_type: str = "uuid"
) -> set[Any]:
    """Which of the given keys have a row in the table."""
    wanted = list(set(ids))
    if not wanted:
        return set()
    rows = await conn.fetch(f'SELECT "{key}" FROM "{table}" WHERE "{key}" = ANY($1::{sql_type}[])', wanted)
    return {r[0] for r in rows}


async def existing_generations(
    conn: asyncpg.Connection, keys: Iterable[tuple[uuid.UUID, int]]
) -> set[tuple[uuid.UUID, int]]:
    """Which (meta_query_id, model_id) generations have a row."""
    wanted = list(set(keys))
    if not wanted:
        return set()
    rows = await conn.fetch(
        "SELECT g.meta_query_id, g.model_id FROM had_generation g"
        " JOIN unnest($1::uuid[], $2::int4[]) AS u(q, m) ON g.meta_query_id = u.q AND g.model_id = u.m",
        [k[0] for k in wanted],
        [k[1] for k in wanted],
    )
    return {(r[0], r[1]) for r in rows}


CONTEXT = [
    Col("context_id", "uuid"),
    Col("prefix", "text"),
    Col("suffix", "text"),
    Col("file_name", "text"),
    Col("selected_text", "text"),
    Col("context_files", "text", "jsonb"),
]
CONTEXTUAL = [
    Col("contextual_telemetry_id", "uuid"),
    Col("version_id", "int4"),
    Col("trigger_type_id", "int4"),
    Col("language_id", "int4"),
    Col("file_path", "text"),
    Col("caret_line", "int4"),
    Col("document_char_length", "int4"),
    Col("relative_document_position", "float8"),
]
BEHAVIORAL = [
    Col("behavioral_telemetry_id", "uuid"),
    Col("time_since_last_shown", "int8"),
    Col("time_since_last_accepted", "int8"),
    Col("typing_speed", "float8"),
]
META_QUERY = [
    Col("meta_query_id", "uuid"),
    Col("user_id", "uuid"),
    Col("session_id", "uuid"),
    Col("project_id", "uuid"),
    Col("context_id", "uuid"),
    Col("contextual_telemetry_id", "uuid"),
    Col("behavioral_telemetry_id", "uuid"),
    Col("query_type", "text"),
    Col("timestamp", "timestamptz"),
    Col("total_serving_time_ms", "int4"),
]
COMPLETION_QUERY = [Col("meta_query_id", "uuid"), Col("stop_sequences", "text", "jsonb")]
CHAT = [
    Col("chat_id", "uuid"),
    Col("user_id", "uuid"),
    Col("project_id", "uuid"),
    Col("title", "text"),
    Col("created_at", "timestamptz"),
]
CHAT_QUERY = [Col("meta_query_id", "uuid"), Col("chat_id", "uuid"), Col("web_enabled", "bool")]
CHAT_MESSAGE = [
    Col("message_id", "uuid"),
    Col("chat_id", "uuid"),
    Col("meta_query_id", "uuid"),
    Col("role", "text"),
    Col("content", "text"),
    Col("model_id", "int4"),
    Col("created_at", "timestamptz"),
]
GENERATION = [
    Col("meta_query_id", "uuid"),
    Col("model_id", "int4"),
    Col("completion", "text"),
    Col("generation_time_ms", "int4"),
    Col("confidence", "float8"),
    Col("token_logprobs", "text", "float8[]"),
    Col("error", "text"),
    Col("created_at", "timestamptz"),
    Col("was_accepted", "bool"),
]
GROUND_TRUTH = [
    Col("event_id", "uuid"),
    Col("meta_query_id", "uuid"),
    Col("model_id", "int4"),
    Col("truth_timestamp", "timestamptz"),
    Col("ground_truth", "text"),
]

ACCEPT_SQL = (
    "UPDATE had_generation g SET was_accepted = true FROM unnest($1::uuid[], $2::int4[]) AS u(q, m)"
    " WHERE g.meta_query_id = u.q AND g.model_id = u.m AND NOT g.was_accepted"
)
# Times already recorded are skipped, so a replayed `shown` event adds nothing.
SHOWN_SQL = (
    "UPDATE had_generation g SET shown_at = ("
    "  SELECT coalesce(array_agg(DISTINCT t ORDER BY t), '{}') FROM unnest(g.shown_at || u.ts::timestamptz[]) AS t)"
    " FROM unnest($1::uuid[], $2::int4[], $3::text[]) AS u(q, m, ts)"
    " WHERE g.meta_query_id = u.q AND g.model_id = u.m"
)
