"""Telemetry ingest: events/s from the ingress's producer through the Redis stream and a writer process into
PostgreSQL, against a bulk COPY of the same rows in the same run; and the latency the producer adds to a request.

Runs on the embedded PostgreSQL and Redis only (no Ray): the writer process runs the same TelemetryWriter
class the Ray actor wraps.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from app.telemetry import rows as R
from app.telemetry.stream import add_events, publish, wait_drained
from bench.report import Result, Table, percentile
from db.engine import plain_url
from db.migrate import upgrade
from serve.embedded import EmbeddedServices
from tests.utils.telemetry_events import make_user_and_models, query_events, stored_counts

NEEDS_STACK = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this benchmark."""
    g = p.add_argument_group("ingest")
    g.add_argument(
        "--ingest-queries", type=int, default=6000, help="completion queries (4 events each) per pass"
    )
    g.add_argument(
        "--ingest-latency-requests", type=int, default=2000, help="requests timed for the added latency"
    )


def _writer_main(redis_url: str, database_url: str, consumer: str) -> None:
    from app.workers.telemetry_writer import TelemetryWriter, tune_gc_for_writer_process

    tune_gc_for_writer_process()  # as the Ray actor does in its worker process
    asyncio.run(TelemetryWriter(redis_url, database_url, consumer).run())


def _copy_rows(queries: list[list[Any]]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows the writer would produce for these events, per table, in foreign-key order."""
    from app.infra.envelope import Keyring, new_key_spec
    from app.workers import telemetry_writer as W

    sealer = Keyring.parse(new_key_spec("bench")).sealer()  # the baseline stores sealed code too
    out: dict[str, list[tuple[Any, ...]]] = {
        t: []
        for t in (
            "context",
            "contextual_telemetry",
            "behavioral_telemetry",
            "meta_query",
            "completion_query",
            "had_generation",
            "ground_truth",
        )
    }
    for events in queries:
        q, *gens, fb = events
        out["context"].append(W._context_row(q, sealer))
        out["contextual_telemetry"].append(W._contextual_row(q))
        out["behavioral_telemetry"].append(W._behavioral_row(q))
        out["meta_query"].append(W._meta_row(q, set(), set()))
        out["completion_query"].append((q.meta_query_id, R.as_json(q.stop_sequences)))
        for g in gens:
            row = list(W._generation_row(g, sealer))
            row[5] = list(g.token_logprobs or [])  # COPY takes a real array
            row[-1] = g.model_id == fb.model_id  # the accepted flag the feedback would set
            out["had_generation"].append(tuple(row))
        out["ground_truth"].append(W._ground_truth_row(fb, sealer))
    return out


COLUMNS = {
    "context": [c.name for c in R.CONTEXT],
    "contextual_telemetry": [c.name for c in R.CONTEXTUAL],
    "behavioral_telemetry": [c.name for c in R.BEHAVIORAL],
    "meta_query": [c.name for c in R.META_QUERY],
    "completion_query": [c.name for c in R.COMPLETION_QUERY],
    "had_generation": [c.name for c in R.GENERATION],
    "ground_truth": [c.name for c in R.GROUND_TRUTH],
}


async def _copy(database_url: str, tables: dict[str, list[tuple[Any, ...]]]) -> float:
    conn = await asyncpg.connect(plain_url(database_url))
    # COPY is binary: jsonb's binary form is a version byte (1) and the JSON text.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + v.encode(),
        decoder=lambda b: b[1:].decode(),
        schema="pg_catalog",
        format="binary",
    )
    try:
        t0 = time.perf_counter()
        async with conn.transaction():
            for table, rows in tables.items():
                await conn.copy_records_to_table(table, records=rows, columns=COLUMNS[table])
        return time.perf_counter() - t0
    finally:
        await conn.close()


async def _stream_pass(redis: Redis, database_url: str, queries: list[list[Any]]) -> float:
    t0 = time.perf_counter()
    chunk = 100
    for i in range(0, len(queries), chunk):
        await publish(redis, [e for q in queries[i : i + chunk] for e in q])
    await wait_drained(redis, timeout_s=600)
    return time.perf_counter() - t0


async def _request_latency(redis: Redis, user_id: uuid.UUID, models: list[int], n: int) -> list[float]:
    """What a completion request spends on telemetry: one pipeline with its events and the cached answer."""
    samples = []
    for _ in range(n):
        events = query_events(user_id, models, feedback=False)
        t0 = time.perf_counter()
        pipe = redis.pipeline(transaction=False)
        add_events(pipe, events)
        pipe.set(f"c4m:query:{events[0].meta_query_id}", b'{"user_id": "x", "data": {}}', ex=60)
        await pipe.execute()
        samples.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.002)  # requests arrive spread out, while the writer works
    return samples


async def _run(urls: Any, args: argparse.Namespace) -> Result:
    redis = Redis.from_url(urls.redis_url)
    writer = mp.get_context("spawn").Process(
        target=_writer_main, args=(urls.redis_url, urls.database_url, "bench-writer"), daemon=True
    )
    writer.start()
    try:
        user_id, models = await make_user_and_models(urls.database_url)
        n = args.ingest_queries
        warm = [query_events(user_id, models) for _ in range(200)]
        await _stream_pass(redis, urls.database_url, warm)  # connections and plans warm
        stream_q = [query_events(user_id, models) for _ in range(n)]
        copy_q = [query_events(user_id, models) for _ in range(n)]
        copy_rows = _copy_rows(copy_q)
        rows_per_pass = sum(len(v) for v in copy_rows.values()) + n  # + the acceptance update per query
        t_copy = await _copy(urls.database_url, copy_rows)
        t_stream = await _stream_pass(redis, urls.database_url, stream_q)
        latency = await _request_latency(redis, user_id, models, args.ingest_latency_requests)
        await wait_drained(redis, timeout_s=120)
        counts = await stored_counts(urls.database_url, user_id)
    finally:
        writer.terminate()
        writer.join(10)
        await redis.aclose()

    events = n * 4
    res = Result("ingest")
    t = Table(
        "Telemetry ingest (same rows, same run)",
        ["path", "queries", "events", "rows", "seconds", "events/s", "rows/s", "vs COPY"],
    )
    t.add(
        "stream + writer process",
        n,
        events,
        rows_per_pass,
        round(t_stream, 2),
        round(events / t_stream),
        round(rows_per_pass / t_stream),
        round(t_copy / t_stream, 2),
    )
    t.add(
        "bulk COPY (baseline)",
        n,
        events,
        rows_per_pass,
        round(t_copy, 2),
        round(events / t_copy),
        round(rows_per_pass / t_copy),
        1.0,
    )
    t.notes.append(
        "events per query: query (+context, contextual, behavioral telemetry), 2 generations, 1 feedback with ground truth"
    )
    lat = Table(
        "Latency the telemetry adds to a request (one pipelined round trip: 3 XADDs + cached answer)",
        ["requests", "p50 ms", "p99 ms", "max ms"],
    )
    lat.add(
        len(latency),
        round(percentile(latency, 50), 3),
        round(percentile(latency, 99), 3),
        round(max(latency), 3),
    )
    res.tables += [t, lat]
    expected = n + 200 + args.ingest_latency_requests + n
    res.checks["every event stored once"] = (
        counts["queries"] == expected and counts["ground_truths"] == n + 200 + n
    )
    ratio = t_copy / t_stream
    res.goals["ingest >= 0.5 of COPY"] = ratio >= 0.5
    res.goals["request path p99 <= 2 ms"] = percentile(latency, 99) <= 2.0
    res.data = {
        "t_stream_s": t_stream,
        "t_copy_s": t_copy,
        "ratio": ratio,
        "latency_ms": latency,
        "counts": counts,
    }
    return res


def run(_stack: Any, args: argparse.Namespace) -> Result:
    """Start embedded PostgreSQL and Redis in a scratch directory, measure, stop them."""
    with tempfile.TemporaryDirectory(prefix="c4m-ingest-") as d:
        services = EmbeddedServices(Path(d))
        urls = services.start()
        try:
            upgrade(urls.database_url)
            return asyncio.run(_run(urls, args))
        finally:
            services.stop()
