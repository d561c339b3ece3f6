"""Snippets of the project's other files most relevant to the cursor, for a model's multi-file template.

With consent, hybrid search in PostgreSQL: cosine similarity of MiniLM embeddings (pgvector HNSW, with
iterative scans so the project filter still yields enough rows) fused with a lexical score over code
identifiers (tsvector + GIN) by reciprocal rank fusion, in one SQL statement. Without consent, nothing is
read from PostgreSQL: the caller's live files in Redis are chunked on the fly and ranked by BM25.

Retrieval must never fail or stall a completion: any error yields no snippets (logged without content).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from pgvector.sqlalchemy import Vector
from sqlalchemy import bindparam, text

from app.context.chunking import chunk_lines
from app.context.lexical import bm25_scores, query_terms, tokens, tsquery_literal
from app.context.live_state import WILDCARD, Owner, read_files
from app.state import AppState
from db.tables import EMBEDDING_DIM

log = logging.getLogger(__name__)

CANDIDATES = 24  # per ranking, before fusion
RRF_K = 60  # the usual constant of reciprocal rank fusion (Cormack et al., 2009)
EF_SEARCH = 64
QUERY_PREFIX_LINES = 12
QUERY_SUFFIX_LINES = 4
MIN_PARTIAL_CHARS = 200  # a snippet cut to fit the budget is only worth it with this much left
EMBED_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Candidate:
    """A ranked chunk of another file."""

    path: str
    start_line: int
    end_line: int
    text: str
    score: float


def allowed_files(context_files: Sequence[str] | None) -> set[str] | None:
    """The files snippets may come from: None for any (['*'] or not sent), else the listed ones."""
    if context_files is None or WILDCARD in context_files:
        return None
    return set(context_files)


def is_current(path: str, current_file: str) -> bool:
    """Whether a context path names the file being edited (the plugin may send it relative or absolute)."""
    if not current_file:
        return False
    if path == current_file:
        return True
    shorter, longer = sorted((path, current_file), key=len)
    # A bare file name matches only itself: another directory's "utils.py" is another file.
    return "/" in shorter and longer.endswith("/" + shorter.lstrip("/"))


def cursor_text(prefix: str, suffix: str) -> str:
    """The code around the cursor that retrieval looks for."""
    before = "\n".join(prefix.split("\n")[-QUERY_PREFIX_LINES:])
    after = "\n".join(suffix.split("\n")[:QUERY_SUFFIX_LINES])
    return f"{before}{after}"[-2000:]


async def snippets_for(
    state: AppState,
    project_id: uuid.UUID,
    current_file: str,
    prefix: str,
    suffix: str,
    context_files: Sequence[str] | None,
    budget_chars: int,
    consent: bool,
    *,
    user_id: uuid.UUID | None = None,
) -> list[dict[str, str]]:
    """Other files' snippets most relevant to the cursor, best first, their texts within `budget_chars`.

    `context_files` limits the files (['*'] or None: any; []: none); `consent` (the caller may store
    context) selects PostgreSQL, else only `user_id`'s live files in Redis are read. With consent and
    nothing indexed yet (a fresh project), the live files are used too.
    """
    allowed = allowed_files(context_files)
    if budget_chars <= 0 or allowed == set():
        return []
    try:
        candidates: list[Candidate] = []
        if consent:
            candidates = await _from_postgres(state, project_id, current_file, prefix, suffix, allowed)
        if not candidates and user_id is not None:
            candidates = await _from_live_files(
                state, Owner(project_id, user_id), current_file, prefix, suffix, allowed
            )
        return within_budget(candidates, budget_chars)
    except Exception as exc:  # noqa: BLE001 - no snippets is always a valid answer
        log.warning("context retrieval failed (%s); completing without snippets", type(exc).__name__)
        return []


async def _query_vector(state: AppState, query: str) -> list[float] | None:
    embed = getattr(state.gateway, "embed", None)
    if embed is None or not query.strip():
        return None
    try:
        (vector,) = await asyncio.wait_for(embed([query]), timeout=EMBED_TIMEOUT_S)
        return list(vector)
    except Exception as exc:  # noqa: BLE001 - lexical ranking alone still works
        log.warning("query embedding failed (%s); lexical retrieval only", type(exc).__name__)
        return None


def _hybrid_sql(with_vector: bool, with_lexical: bool, restrict: bool) -> str:
    where = "project_id = :project_id AND file_path <> :current" + (
        " AND file_path = ANY(:files)" if restrict else ""
    )
    parts = []
    if with_vector:
        # MATERIALIZED: relaxed-order iterative scans may return rows slightly out of order; rank after.
        parts.append(
            f"""vec AS MATERIALIZED (
                SELECT chunk_id, embedding <=> :query_vector AS distance FROM context_chunk
                WHERE {where} AND embedding IS NOT NULL
                ORDER BY embedding <=> :query_vector LIMIT :k),
            vec_ranked AS (SELECT chunk_id, row_number() OVER (ORDER BY distance) AS rnk FROM vec)"""
        )
    if with_lexical:
        parts.append(
            f"""lex AS MATERIALIZED (
                SELECT chunk_id, ts_rank(lexemes, q, 1) AS rank FROM context_chunk, CAST(:query_terms AS tsquery) q
                WHERE {where} AND lexemes @@ q
                ORDER BY rank DESC LIMIT :k),
            lex_ranked AS (SELECT chunk_id, row_number() OVER (ORDER BY rank DESC) AS rnk FROM lex)"""
        )
    ranked = " UNION ALL ".join(
        f"SELECT chunk_id, rnk FROM {name}"
        for name, on in (("vec_ranked", with_vector), ("lex_ranked", with_lexical))
        if on
    )
    return f"""WITH {", ".join(parts)},
        fused AS (SELECT chunk_id, sum(1.0 / ({RRF_K} + rnk)) AS score FROM ({ranked}) r GROUP BY chunk_id)
        SELECT c.file_path, c.start_line, c.end_line, c.content, f.score
        FROM fused f JOIN context_chunk c ON c.chunk_id = f.chunk_id
        ORDER BY f.score DESC, c.file_path, c.start_line"""


async def _from_postgres(
    state: AppState,
    project_id: uuid.UUID,
    current_file: str,
    prefix: str,
    suffix: str,
    allowed: set[str] | None,
) -> list[Candidate]:
    terms = query_terms(prefix, suffix)
    vector = await _query_vector(state, cursor_text(prefix, suffix))
    if vector is None and not terms:
        return []
    sql = text(_hybrid_sql(vector is not None, bool(terms), allowed is not None))
    params: dict[str, object] = {"project_id": project_id, "current": current_file, "k": CANDIDATES}
    if vector is not None:
        sql = sql.bindparams(bindparam("query_vector", type_=Vector(EMBEDDING_DIM)))
        params["query_vector"] = vector
    if terms:
        params["query_terms"] = tsquery_literal(terms)
    if allowed is not None:
        params["files"] = sorted(allowed)
    async with state.sessionmaker() as db, db.begin():
        # The HNSW scan goes on until enough rows pass the project filter (pgvector >= 0.8).
        await db.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        await db.execute(text(f"SET LOCAL hnsw.ef_search = {EF_SEARCH}"))
        rows = (await db.execute(sql, params)).all()
    return [
        Candidate(r.file_path, r.start_line, r.end_line, r.content, float(r.score))
        for r in rows
        if not is_current(r.file_path, current_file)
    ]


async def _from_live_files(
    state: AppState, owner: Owner, current_file: str, prefix: str, suffix: str, allowed: set[str] | None
) -> list[Candidate]:
    terms = query_terms(prefix, suffix)
    if not terms:
        return []
    files = await read_files(state.redis, owner, sorted(allowed) if allowed is not None else None)
    chunks = [
        c
        for path, lines in files.items()
        if not is_current(path, current_file)
        for c in chunk_lines(path, lines)
    ]
    scores = bm25_scores(terms, [tokens(c.text) for c in chunks])
    ranked = sorted(
        (
            Candidate(c.path, c.start_line, c.end_line, c.text, s)
            for c, s in zip(chunks, scores, strict=True)
            if s > 0
        ),
        key=lambda c: (-c.score, c.path, c.start_line),
    )
    return ranked[: 2 * CANDIDATES]


def within_budget(candidates: Sequence[Candidate], budget_chars: int) -> list[dict[str, str]]:
    """Snippets in rank order whose texts fit the budget; lines another chosen chunk already gives are cut."""
    chosen: list[dict[str, str]] = []
    covered: dict[str, list[tuple[int, int]]] = {}
    left = budget_chars
    for c in candidates:
        lines = c.text.split("\n")
        start, end = _uncovered(c.start_line, c.start_line + len(lines), covered.get(c.path, []))
        if start >= end:
            continue
        piece = lines[start - c.start_line : end - c.start_line]
        body = "\n".join(piece)
        if len(body) > left:
            if left < MIN_PARTIAL_CHARS:
                continue
            # Whole lines from the top while they fit: the start of a definition says the most.
            kept: list[str] = []
            size = 0
            for line in piece:
                if size + len(line) + (1 if kept else 0) > left:
                    break
                size += len(line) + (1 if kept else 0)
                kept.append(line)
            if not kept:
                continue
            piece, body = kept, "\n".join(kept)
            end = start + len(kept)
        if not body.strip():
            continue
        chosen.append({"path": c.path, "text": body})
        covered.setdefault(c.path, []).append((start, end))
        left -= len(body)
        if left <= 0:
            break
    return chosen


def _uncovered(start: int, end: int, taken: list[tuple[int, int]]) -> tuple[int, int]:
    """The longest run of [start, end) that no taken range covers."""
    points = sorted({start, end, *(x for a, b in taken for x in (a, b) if start < x < end)})
    best = (start, start)
    run_start: int | None = None
    for a, b in pairwise(points):
        free = not any(ta <= a and b <= tb for ta, tb in taken)
        if free:
            run_start = a if run_start is None else run_start
            if b - run_start > best[1] - best[0]:
                best = (run_start, b)
        else:
            run_start = None
    return best
