"""Bulk writes of telemetry rows with asyncpg, one statement per table per batch, in two ways.

* `copy_rows`: a binary COPY straight into the table, the fast path for batches of new events. It is
  idempotent too, in its own way: every table it writes has a unique key on the event's id, so a row
  that is already there makes the COPY (and with it the batch's transaction) fail instead of writing it
  twice; the writer then writes that batch again with `insert_rows`.
* `insert_rows`: `INSERT ... SELECT FROM unnest(...) ON CONFLICT` on the row's key, so writing a replayed
  batch changes nothing.

What is written where comes from db/tables.py, the one declaration of the schema: a `Rows` is a table's
name, the columns the writer fills (its key first, then the table's order) with the types their values
travel in, and the key that identifies a row. Rows are tuples in that column order; JSONB values are JSON
text, float8[] values are lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import asyncpg
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine
from sqlmodel import SQLModel

from db.tables import (
    BehavioralTelemetry,
    Chat,
    ChatMessage,
    ChatQuery,
    CompletionQuery,
    Context,
    ContextualTelemetry,
    Generation,
    GroundTruth,
    MetaQuery,
)


@dataclass(frozen=True)
class Col:
    """A column: its name, the array type its values travel in, and the cast applied per row."""

    name: str
    sql_type: str
    cast: str | None = None


@dataclass(frozen=True)
class RowLayout:
    """What the writer puts in one table: its name, the columns of a row (in row order), the key that
    identifies a row (the conflict target) and the columns a replayed row overwrites (none: it is ignored)."""

    table: str
    cols: tuple[Col, ...]
    key: tuple[str, ...]
    update: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Col]:
        """The columns, in row order."""
        return iter(self.cols)

    @property
    def names(self) -> list[str]:
        """The column names, in row order."""
        return [c.name for c in self.cols]

    @cached_property
    def insert_sql(self) -> str:
        """INSERT ... SELECT FROM unnest(one array per column) ON CONFLICT on the key."""
        names = ", ".join(f'"{c.name}"' for c in self.cols)
        params = ", ".join(f"${i + 1}::{c.sql_type}[]" for i, c in enumerate(self.cols))
        aliases = ", ".join(f"c{i}" for i in range(len(self.cols)))
        picks = ", ".join(f"c{i}::{c.cast}" if c.cast else f"c{i}" for i, c in enumerate(self.cols))
        target = ", ".join(f'"{k}"' for k in self.key)
        if self.update:
            action = "DO UPDATE SET " + ", ".join(f'"{u}" = excluded."{u}"' for u in self.update)
        else:
            action = "DO NOTHING"
        return (
            f'INSERT INTO "{self.table}" ({names}) SELECT {picks} FROM unnest({params}) AS u({aliases})'
            f" ON CONFLICT ({target}) {action}"
        )


def table_of(model: type[SQLModel]) -> Table:
    """The SQLAlchemy table of a SQLModel table class."""
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


# Array element types for unnest, most specific first (BigInteger is an Integer, Text a String).
_SCALARS: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (Uuid, "uuid"),
    (BigInteger, "int8"),
    (Integer, "int4"),
    (Float, "float8"),
    (String, "text"),
    (Boolean, "bool"),
    (LargeBinary, "bytea"),  # sealed text (app/infra/envelope.py)
)


def transport(column: Column[Any]) -> Col:
    """How a column's values travel in a bulk write: JSONB as JSON text and float8[] as one array literal per
    row (arrays of arrays cannot travel through unnest), each cast back; scalars as arrays of their own type."""
    t: TypeEngine[Any] = column.type
    if isinstance(t, TypeDecorator):
        t = t.impl_instance
    if isinstance(t, JSONB):
        return Col(column.name, "text", "jsonb")
    if isinstance(t, ARRAY) and isinstance(t.item_type, Float):
        return Col(column.name, "text", "float8[]")
    if isinstance(t, DateTime):
        return Col(column.name, "timestamptz" if t.timezone else "timestamp")
    for kind, sql_type in _SCALARS:
        if isinstance(t, kind):
            return Col(column.name, sql_type)
    raise TypeError(f"{column.table.name}.{column.name}: no bulk transport for {t!r}")


def layout(
    model: type[SQLModel],
    *,
    skip: Iterable[Column[Any]] = (),
    last: Iterable[Column[Any]] = (),
    update: Iterable[Column[Any]] = (),
) -> RowLayout:
    """The row layout of a table: its key first, then its other columns in table order, `last` at the end.

    `skip`: columns the writer leaves to the database (each must be nullable, have a server default or be
    the autoincrementing key). The key is the primary key, or, where that is skipped, the one unique
    constraint among the written columns.
    """
    table = table_of(model)
    skipped = {c.name for c in skip}
    for c in table.c:
        if c.name in skipped and not (
            c.nullable or c.server_default is not None or c is table.autoincrement_column
        ):
            raise ValueError(f"{table.name}.{c.name} cannot be left to the database")
    written = [c for c in table.c if c.name not in skipped]
    pk = [c for c in table.primary_key.columns]
    if all(c.name not in skipped for c in pk):
        key = pk
    else:
        uniques = [
            list(u.columns)
            for u in table.constraints
            if isinstance(u, UniqueConstraint) and all(c.name not in skipped for c in u.columns)
        ]
        if len(uniques) != 1:
            raise ValueError(f"{table.name}: no single key among the written columns")
        key = uniques[0]
    tail = [c.name for c in last]
    ordered = [*key, *(c for c in written if c not in key and c.name not in tail)]
    ordered += [table.c[name] for name in tail]
    return RowLayout(
        table=table.name,
        cols=tuple(transport(c) for c in ordered),
        key=tuple(c.name for c in key),
        update=tuple(c.name for c in update),
    )


async def insert_rows(conn: asyncpg.Connection, to: RowLayout, rows: Sequence[Sequence[Any]]) -> None:
    """Insert many rows of one table in one statement (nothing when rows is empty)."""
    if not rows:
        return
    columns = [list(values) for values in zip(*rows, strict=True)]
    for i, c in enumerate(to.cols):
        if c.cast == "float8[]":  # arrays of arrays cannot travel through unnest: one literal per row
            columns[i] = [as_float_array(v) for v in columns[i]]
    await conn.execute(to.insert_sql, *columns)


async def copy_rows(conn: asyncpg.Connection, to: RowLayout, rows: Sequence[Sequence[Any]]) -> None:
    """Binary COPY of many rows into one table (nothing when rows is empty); a key already there raises
    asyncpg.UniqueViolationError and aborts the transaction."""
    if not rows:
        return
    await conn.copy_records_to_table(to.table, records=rows, columns=to.names)


def as_json(value: Any) -> str | None:
    """A JSONB value as text (None stays SQL NULL)."""
    return None if value is None else json.dumps(value)


def as_float_array(values: Iterable[float] | None) -> str | None:
    """A float8[] literal for one row (arrays of arrays cannot travel through unnest)."""
    if values is None:
        return None
    return "{" + ",".join(repr(float(v)) for v in values) + "}"


@dataclass(frozen=True)
class _KeyMatch:
    """Rows of a table matched against arrays of its primary key's values (plus extra arrays) via unnest."""

    table: str
    unnest: str  # unnest($1::uuid[], ...) AS u(k0, ..., <extra names>)
    on: str  # t."col" = u.k0 AND ..., for the table aliased t
    columns: str  # t."col", ...


def _key_match(model: type[SQLModel], extra: Sequence[tuple[str, str]] = ()) -> _KeyMatch:
    table = table_of(model)
    key = [transport(c) for c in table.primary_key.columns]
    arrays = [c.sql_type for c in key] + [sql_type for _name, sql_type in extra]
    aliases = [f"k{i}" for i in range(len(key))] + [name for name, _t in extra]
    return _KeyMatch(
        table=table.name,
        unnest=(
            "unnest("
            + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(arrays))
            + f") AS u({', '.join(aliases)})"
        ),
        on=" AND ".join(f't."{c.name}" = u.k{i}' for i, c in enumerate(key)),
        columns=", ".join(f't."{c.name}"' for c in key),
    )


@cache
def _existing_sql(model: type[SQLModel]) -> tuple[str, int]:
    table = table_of(model)
    key = [transport(c) for c in table.primary_key.columns]
    if len(key) == 1:
        k = key[0]
        return f'SELECT "{k.name}" FROM "{table.name}" WHERE "{k.name}" = ANY($1::{k.sql_type}[])', 1
    m = _key_match(model)
    return f'SELECT {m.columns} FROM "{m.table}" t JOIN {m.unnest} ON {m.on}', len(key)


async def existing(conn: asyncpg.Connection, model: type[SQLModel], keys: Iterable[Any]) -> set[Any]:
    """Which of the given primary keys have a row in the model's table (a key of several columns is a
    tuple of their values, in the primary key's order)."""
    wanted = list(set(keys))
    if not wanted:
        return set()
    sql, width = _existing_sql(model)
    if width == 1:
        return {r[0] for r in await conn.fetch(sql, wanted)}
    rows = await conn.fetch(sql, *([k[i] for k in wanted] for i in range(width)))
    return {tuple(r) for r in rows}


_mq = table_of(MetaQuery).c
_g = table_of(Generation).c
CONTEXT = layout(Context)
CONTEXTUAL = layout(ContextualTelemetry)
BEHAVIORAL = layout(BehavioralTelemetry)
# A query's study and arm are not the writer's to set.
META_QUERY = layout(MetaQuery, skip=(_mq.study_id, _mq.arm_id))
COMPLETION_QUERY = layout(CompletionQuery)
CHAT = layout(Chat, update=(table_of(Chat).c.title,))  # a chat event again: a new title
CHAT_QUERY = layout(ChatQuery)
CHAT_MESSAGE = layout(ChatMessage)
# shown_at is only ever appended to (SHOWN_SQL); the acceptance comes last, decided by the batch's feedback.
GENERATION = layout(Generation, skip=(_g.shown_at,), last=(_g.was_accepted,))
GROUND_TRUTH = layout(GroundTruth, skip=(table_of(GroundTruth).c.ground_truth_id,))

_gen = _key_match(Generation)
ACCEPT_SQL = (
    f'UPDATE "{_gen.table}" t SET "{_g.was_accepted.name}" = true FROM {_gen.unnest}'
    f' WHERE {_gen.on} AND NOT t."{_g.was_accepted.name}"'
)
# Times already recorded are skipped, so a replayed `shown` event adds nothing.
_shown = _key_match(Generation, extra=(("ts", "text"),))
SHOWN_SQL = (
    f'UPDATE "{_shown.table}" t SET "{_g.shown_at.name}" = ('
    f"  SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{{}}')"
    f' FROM unnest(t."{_g.shown_at.name}" || u.ts::timestamptz[]) AS x)'
    f" FROM {_shown.unnest} WHERE {_shown.on}"
)
