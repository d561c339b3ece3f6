"""Retrieval: time to fetch the context snippets of one completion in a project of 2,000 files.

The project is synthesised from the Python standard library: `--retrieval-files` files cut from its
modules at top-level statements (tests left out; see `corpus`), chunked exactly as the ContextIndexer chunks them and inserted in bulk into
context_chunk (content, hash, tsvector lexemes, embedding), and also written to one user's live state in
Redis through the update path's atomic apply. Then `snippets_for` (what the ingress calls per completion)
is timed at `--retrieval-cursors` seeded cursor positions, each in the middle of a line of one of the
files, that file being the current one:

* `consent, any file`: context_files ["*"]; hybrid search in PostgreSQL (query embedded with MiniLM in
  process on one torch thread, as an embedder replica runs it; HNSW + tsvector fused by RRF).
* `consent, 8 open files`: context_files = 8 files (the plugin sends its open editors).
* `no consent, 8 open files`: the Redis-only path (live files chunked on the fly, BM25).
* `no consent, any file`: the Redis-only path with ["*"]: the 64 most recently edited live files.

Corpus embeddings: `--retrieval-vectors random` (default) inserts seeded random unit vectors, because
embedding ~20k chunks with MiniLM takes this 2-core machine over an hour; random 384-d vectors are the
hard case for HNSW (no cluster structure), so search times are not flattered. `minilm` embeds the
corpus for real (use with fewer files). The query is always embedded for real, and its time is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from app.protocol import CompletionCall, CompletionResult
from bench.report import Result, Table, summary

BUDGET_CHARS = 4000
OPEN_FILES = 8


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("retrieval")
    g.add_argument("--retrieval-files", type=int, default=2000, help="files in the project (default 2000)")
    g.add_argument("--retrieval-cursors", type=int, default=200, help="timed cursor positions (default 200)")
    g.add_argument(
        "--retrieval-redis-all-cursors",
        type=int,
        default=50,
        help="cursors for the Redis-only path with ['*'] (default 50)",
    )
    g.add_argument(
        "--retrieval-vectors",
        choices=["random", "minilm"],
        default="random",
        help="corpus embeddings: seeded random unit vectors (default) or real MiniLM",
    )


# Standalone: needs PostgreSQL and Redis, not Ray or Serve.
NEEDS_STACK = False


def _split(lines: list[str], target: int) -> list[list[str]]:
    """A module cut into pieces of about `target` lines, each cut before a top-level statement."""
    pieces: list[list[str]] = []
    start = 0
    for i in range(1, len(lines) + 1):
        if i == len(lines) or (i - start >= target and lines[i][:1].isalpha()):
            pieces.append(lines[start:i])
            start = i
    return [p for p in pieces if any(line.strip() for line in p)]


def corpus(n_files: int, max_chars: int, seed: int = 7) -> dict[str, list[str]]:
    """`n_files` files synthesised from the standard library's sources (tests left out).

    The stdlib has fewer modules than that, so modules are cut at top-level statements into pieces of
    equal target length (found by bisection), named `<module path>/part_<k>.py`; a seeded sample keeps
    exactly `n_files`.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"}
    modules: dict[str, list[str]] = {}
    for p in sorted(root.rglob("*.py")):
        if skip & set(p.relative_to(root).parts):
            continue
        lines = p.read_text(encoding="utf-8", errors="replace").split("\n")
        size, kept = 0, []
        for line in lines:  # the live state's per-file limit applies to indexed files as well
            size += len(line) + 1
            if size > max_chars:
                break
            kept.append(line)
        modules[str(p.relative_to(root))] = kept
    lo, hi = 10, max(len(v) for v in modules.values())
    while lo < hi:  # the largest piece length that still yields n_files pieces
        mid = (lo + hi + 1) // 2
        if sum(len(_split(v, mid)) for v in modules.values()) >= n_files:
            lo = mid
        else:
            hi = mid - 1
    files: dict[str, list[str]] = {}
    for name, lines in modules.items():
        pieces = _split(lines, lo)
        for k, piece in enumerate(pieces):
            files[name if len(pieces) == 1 else f"{name[:-3]}/part_{k:02d}.py"] = piece
    chosen = random.Random(seed).sample(sorted(files), min(n_files, len(files)))
    return {path: files[path] for path in sorted(chosen)}


def cursors(files: dict[str, list[str]], n: int, seed: int = 11) -> list[dict[str, Any]]:
    """Seeded cursor positions in the middle of non-trivial lines, with 8 'open' files each."""
    rng = random.Random(seed)
    names = sorted(files)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        path = rng.choice(names)
        lines = files[path]
        candidates = [i for i, line in enumerate(lines) if len(line.strip()) >= 12]
        if not candidates:
            continue
        i = rng.choice(candidates)
        line = lines[i]
        col = rng.randrange(len(line) - len(line.lstrip()) + 4, len(line))
        prefix = "\n".join(lines[:i] + [line[:col]])
        suffix = "\n".join([line[col:]] + lines[i + 1 :])
        others = rng.sample([x for x in names if x != path], OPEN_FILES - 1)
        out.append({"path": path, "prefix": prefix, "suffix": suffix, "open": [path, *others]})
    return out


class TimedEmbedder:
    """The model gateway's embed(), in process: MiniLM on one torch thread, each call timed."""

    def __init__(self) -> None:
        import torch

        from deployments.inference.embedding import MiniLMEmbedder

        torch.set_num_threads(1)
        self.model = MiniLMEmbedder()
        self.times_ms: list[float] = []

    async def complete(self, model_name: str, call: CompletionCall) -> CompletionResult:
        raise RuntimeError("no completion models in this benchmark")

    async def embed(self, texts: list[str]) -> list[list[float]]:
        # In a thread, as a remote call would be: the retrieval's lexical query runs meanwhile.
        began = time.perf_counter()
        vectors = await asyncio.to_thread(self.model.embed, texts)
        self.times_ms.append((time.perf_counter() - began) * 1000)
        return vectors


async def _load(
    state: Any, files: dict[str, list[str]], vectors: str, embedder: TimedEmbedder
) -> dict[str, Any]:
    """A project whose files are indexed (bulk insert) and live in one user's Redis state."""
    import numpy as np
    from sqlalchemy import text
    from sqlalchemy.dialects.postgresql import insert

    from app.context.chunking import chunk_lines
    from app.context.edits import LineChange
    from app.context.live_state import Owner, apply_updates
    from app.workers.context_indexer import chunk_row
    from db.tables import EMBEDDING_DIM, ContextChunk, Project, utcnow

    project = Project(project_name="retrieval-bench")
    async with state.sessionmaker() as db:
        db.add(project)
        await db.commit()
    owner = Owner(project.project_id, uuid.uuid4())

    began = time.perf_counter()
    chunks = [c for path, lines in files.items() for c in chunk_lines(path, lines)]
    if vectors == "minilm":
        import torch

        torch.set_num_threads(2)
        embs: list[Any] = []
        for i in range(0, len(chunks), 64):
            embs += embedder.model.embed([c.embedding_text() for c in chunks[i : i + 64]])
        torch.set_num_threads(1)
    else:
        rng = np.random.default_rng(3)
        raw = rng.standard_normal((len(chunks), EMBEDDING_DIM)).astype(np.float32)
        embs = list(raw / np.linalg.norm(raw, axis=1, keepdims=True))
    embed_s = time.perf_counter() - began

    began = time.perf_counter()
    async with state.sessionmaker() as db:
        # Bulk load: building the HNSW graph once afterwards is much faster than growing it row by row.
        await db.execute(text("DROP INDEX IF EXISTS ix_context_chunk_embedding_hnsw"))
        for i in range(0, len(chunks), 500):
            sealer, now = state.keyring.sealer(), utcnow()
            rows = [  # the rows the indexer writes: sealed content, keyed lexemes
                chunk_row(project.project_id, c, embs[i + j], state.keyring, sealer, now)
                for j, c in enumerate(chunks[i : i + 500])
            ]
            await db.execute(insert(ContextChunk).values(rows))
        await db.commit()
    insert_s = time.perf_counter() - began
    began = time.perf_counter()
    async with state.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("SET maintenance_work_mem = '1GB'"))
        # The same index as the migration (db/tables.py): HNSW, cosine, default m and ef_construction.
        await conn.execute(
            text(
                "CREATE INDEX ix_context_chunk_embedding_hnsw ON context_chunk "
                "USING hnsw (embedding vector_cosine_ops)"
            )
        )
        await conn.execute(text("VACUUM ANALYZE context_chunk"))
    index_s = time.perf_counter() - began

    began = time.perf_counter()
    for path, lines in files.items():
        await apply_updates(
            state.redis,
            owner,
            {path: [LineChange("insert", 0, 0, lines)]},
            max_file_chars=state.settings.max_context_chars,
            max_files=len(files) + 1,
            ttl_ms=3600_000,
            mark_dirty=False,
        )
    redis_s = time.perf_counter() - began
    return {
        "owner": owner,
        "chunks": len(chunks),
        "lines": sum(len(v) for v in files.values()),
        "chars": sum(len(x) + 1 for v in files.values() for x in v),
        "embed_s": embed_s,
        "insert_s": insert_s,
        "index_s": index_s,
        "redis_s": redis_s,
    }


async def _plans(
    state: Any, project_id: uuid.UUID, open_files: list[str], vector: list[float]
) -> dict[str, str]:
    """Which index the vector search uses, for any file and for 8 open files."""
    from pgvector.sqlalchemy import Vector
    from sqlalchemy import bindparam, text

    from db.tables import EMBEDDING_DIM

    out = {}
    for name, restrict in (("any file", False), ("8 open files", True)):
        where = "project_id = :p" + (" AND file_path = ANY(:f)" if restrict else "")
        sql = text(
            f"EXPLAIN SELECT chunk_id FROM context_chunk WHERE {where} ORDER BY embedding <=> :q LIMIT 24"
        ).bindparams(bindparam("q", type_=Vector(EMBEDDING_DIM)))
        params: dict[str, Any] = {"p": project_id, "q": vector}
        if restrict:
            params["f"] = open_files
        async with state.sessionmaker() as db, db.begin():
            await db.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            plan = [r[0] for r in (await db.execute(sql, params)).all()]
        out[name] = next((line.strip() for line in plan if "Index" in line or "Seq Scan" in line), plan[0])
    return out


async def _run(database_url: str, redis_url: str, args: argparse.Namespace) -> Result:
    from app.bootstrap import build_state, close_state
    from app.context.retrieval import snippets_for
    from app.infra.settings import Settings

    settings = Settings(environment="test")
    embedder = TimedEmbedder()
    state = await build_state(settings, database_url, redis_url, embedder, [])  # type: ignore[arg-type]
    try:
        files = corpus(args.retrieval_files, settings.max_context_chars)
        load = await _load(state, files, args.retrieval_vectors, embedder)
        owner = load["owner"]
        points = cursors(files, args.retrieval_cursors)
        await embedder.embed(["warm up"])
        plans = await _plans(state, owner.project_id, points[0]["open"], (await embedder.embed(["x = 1"]))[0])

        scenarios = [
            ("consent, any file", True, False, points),
            ("consent, 8 open files", True, True, points),
            ("no consent, 8 open files", False, True, points),
            ("no consent, any file", False, False, points[: args.retrieval_redis_all_cursors]),
        ]
        table = Table(
            f"Retrieval: snippets_for per completion, project of {len(files)} files, {load['chunks']} chunks",
            [
                "scenario",
                "n",
                "p50 ms",
                "p95 ms",
                "mean ms",
                "embed p50",
                "embed p95",
                "rest p50",
                "rest p95",
                "snippets",
                "chars",
            ],
        )
        data: dict[str, Any] = {"load": {k: v for k, v in load.items() if k != "owner"}, "plans": plans}
        checks = {"within_budget": True, "current_file_excluded": True, "open_files_only": True}
        nonempty: dict[str, float] = {}
        for name, consent, restrict, pts in scenarios:
            times, counts, chars = [], [], []
            embedder.times_ms.clear()
            for cur in pts:
                began = time.perf_counter()
                snippets = await snippets_for(
                    state,
                    owner.project_id,
                    cur["path"],
                    cur["prefix"],
                    cur["suffix"],
                    cur["open"] if restrict else ["*"],
                    BUDGET_CHARS,
                    consent,
                    user_id=owner.user_id,
                )
                times.append((time.perf_counter() - began) * 1000)
                counts.append(len(snippets))
                chars.append(sum(len(s.text) for s in snippets))
                checks["within_budget"] &= chars[-1] <= BUDGET_CHARS
                checks["current_file_excluded"] &= all(s.path != cur["path"] for s in snippets)
                if restrict:
                    checks["open_files_only"] &= all(s.path in cur["open"] for s in snippets)
            s = summary(times)
            e = summary(embedder.times_ms)
            # Per request, what the query embedding does not cover (the lexical query runs during it).
            beyond = (
                summary([t - m for t, m in zip(times, embedder.times_ms, strict=True)])
                if consent and len(embedder.times_ms) == len(times)
                else None
            )
            nonempty[name] = sum(1 for c in counts if c) / len(counts)
            table.add(
                name,
                s["n"],
                s["p50"],
                s["p95"],
                s["mean"],
                e["p50"] if consent else "-",
                e["p95"] if consent else "-",
                beyond["p50"] if beyond else "-",
                beyond["p95"] if beyond else "-",
                round(sum(counts) / len(counts), 1),
                round(sum(chars) / len(chars)),
            )
            data[name] = {
                "total_ms": s,
                "embed_ms": e if consent else None,
                "beyond_embed_ms": beyond,
                "times_ms": times,
                "nonempty": nonempty[name],
            }
        checks["snippets_found"] = all(v >= 0.9 for v in nonempty.values())
        table.notes += [
            (
                f"budget {BUDGET_CHARS} chars; corpus vectors: {args.retrieval_vectors}; query embedded for real "
                "(MiniLM in process, 1 torch thread, in a thread as a remote call; via Serve add the handle hop)"
            ),
            (
                f"setup: embed {load['embed_s']:.1f} s, bulk insert {load['insert_s']:.1f} s, "
                f"HNSW build {load['index_s']:.1f} s, "
                f"Redis live state {load['redis_s']:.1f} s ({load['chars'] / 1e6:.1f} M chars)"
            ),
            "rest = per request, total minus the query embedding (the lexical query runs during the embedding)",
            f"vector scan plan: any file -> {plans['any file']}; 8 open files -> {plans['8 open files']}",
        ]
        return Result("retrieval", tables=[table], data=data, checks=checks)
    finally:
        await close_state(state)


def run(stack: Any, args: argparse.Namespace) -> Result:
    """Run against the stack's services when it has them, else against fresh embedded ones."""
    if getattr(stack, "_database_url", ""):
        return asyncio.run(_run(stack._database_url, stack._redis_url, args))
    from db.migrate import upgrade
    from serve.embedded import EmbeddedServices

    with tempfile.TemporaryDirectory(prefix="code4me-bench-retrieval-") as tmp:
        services = EmbeddedServices(Path(tmp))
        urls = services.start()
        try:
            upgrade(urls.database_url)
            return asyncio.run(_run(urls.database_url, urls.redis_url, args))
        finally:
            services.stop()
