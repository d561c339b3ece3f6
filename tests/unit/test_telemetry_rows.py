"""Telemetry rows against db/tables.py: the layouts the writer uses, the rows it builds, the events it reads."""

from __future__ import annotations

import json
import types
import typing
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pydantic
import pytest
from sqlalchemy import Column, LargeBinary, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB

from app.infra.encryption import context_aad, generation_aad, ground_truth_aad, message_aad, title_aad
from app.infra.envelope import Keyring, new_key_spec
from app.telemetry import events as E
from app.telemetry import rows as R
from app.workers import telemetry_writer as W
from db import tables as T
from db.tables import utcnow

LAYOUTS: dict[type[Any], R.RowLayout] = {
    T.Context: R.CONTEXT,
    T.ContextualTelemetry: R.CONTEXTUAL,
    T.BehavioralTelemetry: R.BEHAVIORAL,
    T.MetaQuery: R.META_QUERY,
    T.CompletionQuery: R.COMPLETION_QUERY,
    T.Chat: R.CHAT,
    T.ChatQuery: R.CHAT_QUERY,
    T.ChatMessage: R.CHAT_MESSAGE,
    T.Generation: R.GENERATION,
    T.GroundTruth: R.GROUND_TRUTH,
}


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("model", LAYOUTS, ids=lambda m: m.__tablename__)
def test_a_layout_writes_every_column_the_database_cannot_fill(model: type[Any]) -> None:
    layout, table = LAYOUTS[model], R.table_of(model)
    assert layout.table == table.name
    assert len(set(layout.names)) == len(layout.names)
    assert set(layout.names) <= set(table.c.keys())
    for c in table.c:
        if c.name not in layout.names:
            assert c.nullable or c.server_default is not None or c is table.autoincrement_column, c.name


@pytest.mark.parametrize("model", LAYOUTS, ids=lambda m: m.__tablename__)
def test_a_layouts_key_is_a_unique_key_of_the_table_and_comes_first(model: type[Any]) -> None:
    # COPY's idempotence rests on it: a replayed row violates the key instead of being written twice.
    layout, table = LAYOUTS[model], R.table_of(model)
    uniques = [tuple(c.name for c in table.primary_key.columns)] + [
        tuple(c.name for c in u.columns) for u in table.constraints if isinstance(u, UniqueConstraint)
    ]
    assert layout.key in uniques
    assert tuple(layout.names[: len(layout.key)]) == layout.key
    target = ", ".join(f'"{k}"' for k in layout.key)
    assert f"ON CONFLICT ({target}) DO" in layout.insert_sql


def test_the_statements_name_the_tables_columns() -> None:
    assert R.CONTEXT.insert_sql.startswith(
        'INSERT INTO "context" ("context_id", "prefix", "suffix", "file_name", "selected_text",'
        ' "context_files") SELECT c0, c1, c2, c3, c4, c5::jsonb FROM unnest($1::uuid[], $2::bytea[],'
        " $3::bytea[], $4::text[], $5::bytea[], $6::text[])"
    )
    assert R.CHAT.insert_sql.endswith('ON CONFLICT ("chat_id") DO UPDATE SET "title" = excluded."title"')
    assert R.GROUND_TRUTH.insert_sql.endswith('ON CONFLICT ("event_id") DO NOTHING')
    assert 'UPDATE "had_generation" t SET "was_accepted" = true' in R.ACCEPT_SQL
    assert 't."meta_query_id" = u.k0 AND t."model_id" = u.k1' in R.SHOWN_SQL


@pytest.mark.parametrize(
    ("column", "sql_type", "cast"),
    [
        (R.table_of(T.Context).c.context_id, "uuid", None),
        (R.table_of(T.Context).c.context_files, "text", "jsonb"),
        (R.table_of(T.BehavioralTelemetry).c.time_since_last_shown, "int8", None),
        (R.table_of(T.ContextualTelemetry).c.caret_line, "int4", None),
        (R.table_of(T.BehavioralTelemetry).c.typing_speed, "float8", None),
        (R.table_of(T.MetaQuery).c.query_type, "text", None),
        (R.table_of(T.MetaQuery).c.timestamp, "timestamptz", None),
        (R.table_of(T.ChatQuery).c.web_enabled, "bool", None),
        (R.table_of(T.Generation).c.token_logprobs, "text", "float8[]"),
    ],
    ids=lambda v: getattr(v, "name", v),
)
def test_values_travel_as_their_columns_type(column: Column[Any], sql_type: str, cast: str | None) -> None:
    # A varchar(n) column travels as text[]: a cast to varchar(n) would truncate silently, an insert refuses.
    assert R.transport(column) == R.Col(column.name, sql_type, cast)


def test_a_column_the_database_must_fill_cannot_be_skipped() -> None:
    with pytest.raises(ValueError, match="cannot be left to the database"):
        R.layout(T.Chat, skip=(R.table_of(T.Chat).c.user_id,))


# ---------------------------------------------------------------- rows the writer builds

_T0 = utcnow()


def _query(query_type: str = "completion") -> E.QueryEvent:
    return E.QueryEvent(
        meta_query_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        session_id=uuid.uuid4(),
        project_id=uuid.uuid4(),
        query_type=query_type,  # type: ignore[arg-type]
        timestamp=_T0,
        total_serving_time_ms=11,
        context=E.ContextRow(
            context_id=uuid.uuid4(),
            prefix="pre",
            suffix="suf",
            file_name="f.py",
            selected_text="sel",
            context_files=["a.py", "b.py"],
        ),
        contextual=E.ContextualRow(
            contextual_telemetry_id=uuid.uuid4(),
            version_id=1,
            trigger_type_id=2,
            language_id=3,
            file_path="src/f.py",
            caret_line=4,
            document_char_length=5,
            relative_document_position=0.25,
        ),
        behavioral=E.BehavioralRow(
            behavioral_telemetry_id=uuid.uuid4(),
            time_since_last_shown=6,
            time_since_last_accepted=7,
            typing_speed=1.5,
        ),
        stop_sequences=["\n\n"],
        chat_id=uuid.uuid4() if query_type == "chat" else None,
        web_enabled=query_type == "chat",
    )


_Q = _query()
_CQ = _query("chat")
_GEN = E.GenerationEvent(
    meta_query_id=uuid.uuid4(),
    user_id=uuid.uuid4(),
    model_id=8,
    completion="x = 1",
    generation_time_ms=9,
    confidence=0.75,
    token_logprobs=[-0.5, -0.25],
    error="e",
    created_at=_T0 + timedelta(seconds=1),
)
_FB = E.FeedbackEvent(
    event_id=uuid.uuid4(),
    user_id=uuid.uuid4(),
    meta_query_id=uuid.uuid4(),
    model_id=10,
    was_accepted=True,
    ground_truth="x = 2",
    timestamp=_T0 + timedelta(seconds=2),
)
_CHAT = E.ChatEvent(
    chat_id=uuid.uuid4(), user_id=uuid.uuid4(), project_id=uuid.uuid4(), title="t" * 300, created_at=_T0
)
_MSG = E.ChatMessageEvent(
    message_id=uuid.uuid4(),
    user_id=uuid.uuid4(),
    chat_id=uuid.uuid4(),
    meta_query_id=uuid.uuid4(),
    role="assistant",
    content="hi",
    model_id=12,
    created_at=_T0 + timedelta(seconds=3),
)

_KEYRING = Keyring.parse(new_key_spec("unit"))
_SEALER = _KEYRING.sealer()
# The row each sealed column is bound to (app/infra/encryption.py): opened with it, it is the event's text.
_AAD = {
    ("context", "prefix"): lambda: context_aad("prefix", _Q.context.context_id),  # type: ignore[union-attr]
    ("context", "suffix"): lambda: context_aad("suffix", _Q.context.context_id),  # type: ignore[union-attr]
    ("context", "selected_text"): lambda: context_aad(
        "selected_text",
        _Q.context.context_id,  # type: ignore[union-attr]
    ),
    ("chat_message", "content"): lambda: message_aad(_MSG.message_id),
    ("ground_truth", "ground_truth"): lambda: ground_truth_aad(_FB.event_id),
    ("had_generation", "completion"): lambda: generation_aad(_GEN.meta_query_id, _GEN.model_id),
    ("chat", "title"): lambda: title_aad(_CHAT.chat_id),
}

# (layout, the row the writer builds, where each column's value comes from: an object whose same-named
# field it is, or, for what the writer derives, the value itself).
_ROWS: list[tuple[R.RowLayout, Callable[[], tuple[Any, ...]], list[Any], dict[str, Any]]] = [
    (
        R.CONTEXT,
        lambda: W._context_row(_Q, _SEALER),
        [_Q.context],
        {"context_files": json.dumps(["a.py", "b.py"])},
    ),
    (R.CONTEXTUAL, lambda: W._contextual_row(_Q), [_Q.contextual], {}),
    (R.BEHAVIORAL, lambda: W._behavioral_row(_Q), [_Q.behavioral], {}),
    (
        R.META_QUERY,
        lambda: W._meta_row(_Q, {_Q.session_id}, {_Q.project_id}),  # type: ignore[arg-type]
        [_Q, _Q.context, _Q.contextual, _Q.behavioral],
        {},
    ),
    (R.COMPLETION_QUERY, lambda: W._completion_row(_Q), [_Q], {"stop_sequences": json.dumps(["\n\n"])}),
    (
        R.CHAT,
        lambda: W._chat_row(_CHAT, {_CHAT.project_id}, _SEALER),  # type: ignore[arg-type]
        [_CHAT],
        {"title": "t" * 200},
    ),
    (R.CHAT_QUERY, lambda: W._chat_query_row(_CQ), [_CQ], {}),
    (R.CHAT_MESSAGE, lambda: W._message_row(_MSG, _SEALER), [_MSG], {}),
    (R.GENERATION, lambda: W._generation_row(_GEN, _SEALER, True), [_GEN], {"was_accepted": True}),
    (R.GROUND_TRUTH, lambda: W._ground_truth_row(_FB, _SEALER), [_FB], {"truth_timestamp": _FB.timestamp}),
]

_PYTHON = {
    "uuid": uuid.UUID,
    "int4": int,
    "int8": int,
    "float8": float,
    "text": str,
    "timestamptz": datetime,
    "bool": bool,
    "bytea": bytes,
}


@pytest.mark.parametrize(("layout", "build", "sources", "derived"), _ROWS, ids=[r[0].table for r in _ROWS])
def test_the_writer_builds_rows_in_the_layouts_column_order(
    layout: R.RowLayout, build: Callable[[], tuple[Any, ...]], sources: list[Any], derived: dict[str, Any]
) -> None:
    row = build()
    assert len(row) == len(layout.cols)
    for col, value in zip(layout.cols, row, strict=True):
        if col.name in derived:
            expected = derived[col.name]
        else:
            owners = [s for s in sources if col.name in type(s).model_fields]
            assert owners, f"{layout.table}.{col.name}: no event field of that name"
            expected = getattr(owners[0], col.name)
        if col.sql_type == "bytea":  # sealed: it opens to the event's text in this row only
            assert isinstance(value, bytes) and str(expected).encode() not in value, col.name
            value = _KEYRING.open(value, _AAD[(layout.table, col.name)]())
            assert value == expected, f"{layout.table}.{col.name}"
            continue
        assert value == expected, f"{layout.table}.{col.name}"
        if col.cast == "float8[]":
            assert isinstance(value, list), col.name
        else:
            wanted = _PYTHON[col.sql_type]
            assert isinstance(value, wanted) and (wanted is bool or not isinstance(value, bool)), col.name


def test_the_sentinels_are_distinct() -> None:
    # A row with two columns swapped must fail the test above: no two columns of a row share a value.
    for layout, build, _sources, _derived in _ROWS:
        row = build()
        values = [json.dumps(v, default=str) for v in row]
        assert len(set(values)) == len(values), layout.table


# ---------------------------------------------------------------- event fields against columns

# Which table each event (or nested row) fills with its same-named fields.
_EVENT_TABLES: list[tuple[type[pydantic.BaseModel], type[Any]]] = [
    (E.ContextRow, T.Context),
    (E.ContextualRow, T.ContextualTelemetry),
    (E.BehavioralRow, T.BehavioralTelemetry),
    (E.QueryEvent, T.MetaQuery),
    (E.QueryEvent, T.CompletionQuery),
    (E.QueryEvent, T.ChatQuery),
    (E.GenerationEvent, T.Generation),
    (E.FeedbackEvent, T.GroundTruth),
    (E.ChatEvent, T.Chat),
    (E.ChatMessageEvent, T.ChatMessage),
]
# Fields that may be None where their column may not: the writer writes no row then (feedback without
# ground truth; a completion query, which has no chat).
_FILTERED = {(E.FeedbackEvent, "ground_truth"), (E.QueryEvent, "chat_id")}


def _base_types(annotation: Any) -> tuple[set[type[Any]], bool]:
    """The Python types an annotation admits (Literals by their values' types), and whether None is one."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    out: set[type[Any]] = set()
    for a in args:
        if a is type(None):
            continue
        if typing.get_origin(a) is typing.Literal:
            out |= {type(v) for v in typing.get_args(a)}
        else:
            out.add(typing.get_origin(a) or a)
    return out, type(None) in args


@pytest.mark.parametrize(("event", "model"), _EVENT_TABLES, ids=lambda v: v.__name__)
def test_event_fields_fit_the_columns_of_the_same_name(
    event: type[pydantic.BaseModel], model: type[Any]
) -> None:
    table = R.table_of(model)
    shared = [name for name in event.model_fields if name in table.c]
    assert shared, f"{event.__name__} shares no column with {table.name}"
    for name in shared:
        column = table.c[name]
        kinds, optional = _base_types(event.model_fields[name].annotation)
        if isinstance(column.type, JSONB):
            wanted: tuple[type[Any], ...] = (list, dict)
        elif isinstance(column.type, LargeBinary):  # sealed text: the writer encrypts the event's str
            wanted = (str,)
        else:
            wanted = (column.type.python_type,)
        assert kinds and all(issubclass(k, wanted) for k in kinds), f"{event.__name__}.{name}: {kinds}"
        if optional and (event, name) not in _FILTERED:
            assert column.nullable, f"{event.__name__}.{name} may be None, {table.name}.{name} may not"


def test_every_written_column_has_its_event_field_or_is_derived_by_the_writer() -> None:
    # The columns the writer fills from elsewhere than a same-named event field, each for a reason.
    derived = {
        ("meta_query", "context_id"),  # the nested rows' ids
        ("meta_query", "contextual_telemetry_id"),
        ("meta_query", "behavioral_telemetry_id"),
        ("had_generation", "was_accepted"),  # decided by the batch's feedback
        ("ground_truth", "truth_timestamp"),  # the feedback's timestamp
    }
    fields: dict[str, set[str]] = {}
    for event, model in _EVENT_TABLES:
        fields.setdefault(R.table_of(model).name, set()).update(event.model_fields)
    for layout in LAYOUTS.values():
        for name in layout.names:
            assert name in fields[layout.table] or (layout.table, name) in derived, f"{layout.table}.{name}"
