"""Snippets of the project's other files most relevant to the cursor, for a model's multi-file template.

With consent, hybrid search in PostgreSQL: cosine similarity of MiniLM embeddings (pgvector HNSW, with
iterative scans so the project filter still yields enough rows) and a lexical ranking over code
identifiers (tsvector + GIN, rare identifiers first), fused by reciprocal rank fusion. The lexical query
runs while the query text is being embedded. Without consent, nothing is read from PostgreSQL: the
caller's live files in Redis are chunked on the fly and ranked by BM25.

Retrieval must never fail or stall a completion: any error yields no snippets (logged without content).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import bindparam, text

from app.context.chunking import Chunk, chunk_lines
from app.context.lexical import bm25_scores, query_terms, tokens, tsquery_literal
from app.context.live_state import WILDCARD, Owner, decode_files, read_raw_files, recent_files
from app.infra.encryption import chunk_aad
from app.infra.state import AppState
from app.protocol import Snippet
from app.redaction import redact
from db.tables import EMBEDDING_DIM

log = logging.getLogger(__name__)

CANDIDATES = 24  # per ranking, before fusion
PER_TERM = 10  # chunks fetched per query term by the lexical ranking
PG_QUERY_TERMS = 24  # one index probe each
LIVE_FILES_SCANNED = 64  # without consent: files chunked and ranked per request
RRF_K = 60  # the usual constant of reciprocal rank fusion (Cormack et al., 2009)
EF_SEARCH = 64
# The embedded query: the lines around the cursor (MiniLM's cost grows with the text, and the nearest
# code says the most about what comes next).
QUERY_PREFIX_LINES = 8
QUERY_SUFFIX_LINES = 2
QUERY_MAX_CHARS = 800
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
    return f"{before}{after}"[-QUERY_MAX_CHARS:]


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
) -> list[Snippet]:
    """Other files' snippets most relevant to the cursor, best first, their texts within `budget_chars`.

    `context_files` limits the files (['*'] or None: any; []: none); `consent` (the caller may store
    context) selects PostgreSQL, else only `user_id`'s live files in Redis are read. With consent and
    nothing indexed yet (a fresh project), the live files are used too.
    """
    if budget_chars <= 0 or (context_files is not None and not context_files):
        return []
    try:
        # Live and indexed files are kept under their redacted paths (app/services/context_updates.py);
        # up to 2,000 paths are redacted on the CPU pool.
        current_file, allowed = await state.cpu.run(_stored_paths, current_file, context_files)
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


def _stored_paths(current_file: str, context_files: Sequence[str] | None) -> tuple[str, set[str] | None]:
    """The current file and the allowed files under the redacted paths they are stored by."""
    return redact(current_file), allowed_files(
        None if context_files is None else [redact(p) for p in context_files]
    )


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


def _where(restrict: bool) -> str:
    return "project_id = :project_id AND file_path <> :current" + (
        " AND file_path = ANY(:files)" if restrict else ""
    )


# MATERIALIZED: a relaxed-order iterative HNSW scan may return rows slightly out of order; sort after.
_VECTOR_SQL = """
WITH v AS MATERIALIZED (
    SELECT chunk_id, chunk_index, file_path, start_line, end_line, content,
           embedding <=> :query_vector AS distance
    FROM context_chunk WHERE {where} AND embedding IS NOT NULL
    ORDER BY embedding <=> :query_vector LIMIT :k)
SELECT * FROM v ORDER BY distance, chunk_id
"""


# Ranking every chunk that shares any identifier with the cursor is too slow on big projects (common
# words match half of them), so each term fetches at most :per_term chunks. A term with fewer hits than
# that is rare, and its hits are all there: they rank first, by the sum of 1/hits over their rare terms
# (an IDF); ts_rank over all terms breaks ties and orders the rest.
def _lexical_sql(n_terms: int, restrict: bool) -> str:
    # One probe per term with its own parameter, planned with its value (force_custom_plan): a rare term
    # goes through the GIN index, a common one stops after :per_term rows of a scan.
    probes = " UNION ALL ".join(
        f"(SELECT {i} AS term, chunk_id FROM context_chunk WHERE {_where(restrict)}"
        f" AND lexemes @@ CAST(:t{i} AS tsquery) LIMIT :per_term)"
        for i in range(n_terms)
    )
    return f"""
WITH hits AS MATERIALIZED (SELECT term, chunk_id, count(*) OVER (PARTITION BY term) AS n FROM ({probes}) p),
scored AS (
    SELECT chunk_id, sum(CASE WHEN n < :per_term THEN 1.0 / n ELSE 0 END) AS rarity
    FROM hits GROUP BY chunk_id)
SELECT c.chunk_id, c.chunk_index, c.file_path, c.start_line, c.end_line, c.content, s.rarity,
       ts_rank(c.lexemes, CAST(:query AS tsquery), 1) AS rank
FROM scored s JOIN context_chunk c ON c.chunk_id = s.chunk_id
ORDER BY s.rarity DESC, rank DESC, c.chunk_id LIMIT :k
"""


async def _vector_ranking(
    state: AppState, params: dict[str, Any], restrict: bool, vector: list[float]
) -> list[Any]:
    sql = text(_VECTOR_SQL.format(where=_where(restrict))).bindparams(
        bindparam("query_vector", type_=Vector(EMBEDDING_DIM))
    )
    async with state.sessionmaker() as db, db.begin():
        # The HNSW scan goes on until enough rows pass the project filter (pgvector >= 0.8).
        await db.execute(
            text(
                "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true),"
                f" set_config('hnsw.ef_search', '{EF_SEARCH}', true)"
            )
        )
        return list((await db.execute(sql, {**params, "query_vector": vector})).all())


async def _lexical_ranking(
    state: AppState, params: dict[str, Any], restrict: bool, terms: list[str]
) -> list[Any]:
    if not terms:
        return []
    sql = text(_lexical_sql(len(terms), restrict))
    # Stored lexemes are keyed hashes; a term matches under any key of the keyring (rows not rekeyed yet).
    variants = [state.keyring.lexeme_variants(t) for t in terms]
    values = {**params, "query": tsquery_literal([h for v in variants for h in v]), "per_term": PER_TERM}
    values.update({f"t{i}": tsquery_literal(v) for i, v in enumerate(variants)})
    async with state.sessionmaker() as db, db.begin():
        # Custom plans see each term's value; without seq scans a rare term's probe cannot read the table.
        await db.execute(
            text(
                "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),"
                " set_config('enable_seqscan', 'off', true)"
            )
        )
        return list((await db.execute(sql, values)).all())


def fuse(rankings: Sequence[Sequence[Any]], text_of: Callable[[Any], str]) -> list[Candidate]:
    """Reciprocal rank fusion of ranked chunk rows (each ranking best first); `text_of` opens a row's content."""
    scores: dict[int, float] = {}
    rows: dict[int, Any] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking, start=1):
            scores[row.chunk_id] = scores.get(row.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            rows[row.chunk_id] = row
    order = sorted(scores, key=lambda cid: (-scores[cid], rows[cid].file_path, rows[cid].start_line))
    return [
        Candidate(rows[c].file_path, rows[c].start_line, rows[c].end_line, text_of(rows[c]), scores[c])
        for c in order
    ]


async def _from_postgres(
    state: AppState,
    project_id: uuid.UUID,
    current_file: str,
    prefix: str,
    suffix: str,
    allowed: set[str] | None,
) -> list[Candidate]:
    params: dict[str, Any] = {"project_id": project_id, "current": current_file, "k": CANDIDATES}
    if allowed is not None:
        params["files"] = sorted(allowed)
    restrict = allowed is not None
    # The lexical query runs while the query is being embedded (another process in production).
    terms = query_terms(prefix, suffix, max_terms=PG_QUERY_TERMS)
    lexical = asyncio.create_task(_lexical_ranking(state, params, restrict, terms))
    try:
        vector = await _query_vector(state, cursor_text(prefix, suffix))
        by_vector = await _vector_ranking(state, params, restrict, vector) if vector is not None else []
    finally:
        by_words = await lexical

    def opened(row: Any) -> str:
        return state.keyring.open(row.content, chunk_aad(project_id, row.chunk_index, row.file_path))

    return [c for c in fuse([by_vector, by_words], opened) if not is_current(c.path, current_file)]


async def _from_live_files(
    state: AppState, owner: Owner, current_file: str, prefix: str, suffix: str, allowed: set[str] | None
) -> list[Candidate]:
    terms = query_terms(prefix, suffix)
    if not terms:
        return []
    # Chunking happens per request here: '*' means the most recently edited files, not all of them.
    paths = (
        sorted(allowed) if allowed is not None else await recent_files(state.redis, owner, LIVE_FILES_SCANNED)
    )
    raw = await read_raw_files(state.redis, owner, paths[:LIVE_FILES_SCANNED])
    # Decoding, chunking and ranking up to LIVE_FILES_SCANNED files is CPU work: on the pool.
    return await state.cpu.run(_rank_live_files, raw, terms, current_file)


def _rank_live_files(
    raw: dict[str, bytes | str | None], terms: list[str], current_file: str
) -> list[Candidate]:
    chunks = [
        pair
        for path, lines in decode_files(raw).items()
        if not is_current(path, current_file)
        for pair in _counted_chunks(path, "\n".join(lines))
    ]
    scores = bm25_scores(terms, [counts for _, counts in chunks])
    ranked = sorted(
        (
            Candidate(c.path, c.start_line, c.end_line, c.text, s)
            for (c, _), s in zip(chunks, scores, strict=True)
            if s > 0
        ),
        key=lambda c: (-c.score, c.path, c.start_line),
    )
    return ranked[: 2 * CANDIDATES]


@lru_cache(maxsize=128)
def _counted_chunks(path: str, text: str) -> tuple[tuple[Chunk, Counter[str]], ...]:
    """A live file's chunks with their token counts, cached by content: the same open files come back
    with every completion of a session."""
    return tuple((c, Counter(tokens(c.text))) for c in chunk_lines(path, text.split("\n")))


def within_budget(candidates: Sequence[Candidate], budget_chars: int) -> list[Snippet]:
    """Snippets in rank order whose texts fit the budget; lines another chosen chunk already gives are cut."""
    chosen: list[Snippet] = []
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
        chosen.append(Snippet(c.path, body))
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
