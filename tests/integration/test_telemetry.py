"""The telemetry stream and its writers on real Redis, PostgreSQL and Ray: idempotence, ordering, faults."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from app.infra.envelope import Keyring, new_key_spec
from app.telemetry.events import FeedbackEvent
from app.telemetry.stream import DEAD, FIELD, STREAM, publish, stream_status, wait_drained
from app.workers.telemetry_writer import TelemetryWriter
from db.tables import utcnow
from serve.embedded import EmbeddedServices, ServiceUrls
from tests.utils.telemetry_events import make_user_and_models, query_events, stored_counts

_KEYS = Keyring.parse(new_key_spec("telemetry-tests"))


@pytest.fixture
async def redis(services: ServiceUrls) -> AsyncIterator[Redis]:
    client = Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


# Every writer test runs twice: with every batch written by COPY first (falling back to INSERT ... ON
# CONFLICT when a row is already there), and with INSERT ... ON CONFLICT only.
@pytest.fixture(params=[1, 10**9], ids=["copy", "insert"])
async def writer(services: ServiceUrls, request: pytest.FixtureRequest) -> AsyncIterator[TelemetryWriter]:
    w = TelemetryWriter(
        services.redis_url,
        services.database_url,
        f"t-{uuid.uuid4().hex[:8]}",
        retry_interval_s=0.1,
        max_attempts=3,
        copy_min_events=request.param,
    )
    task = asyncio.create_task(w.run())
    yield w
    w.stop()
    await task


async def test_replayed_events_add_no_rows(
    services: ServiceUrls, redis: Redis, writer: TelemetryWriter
) -> None:
    user_id, models = await make_user_and_models(services.database_url)
    events = [e for _ in range(20) for e in query_events(user_id, models)]
    await publish(redis, events)
    await wait_drained(redis)
    first = await stored_counts(services.database_url, user_id)
    assert first == {
        "queries": 20,
        "contexts": 20,
        "completion_queries": 20,
        "generations": 40,
        "accepted": 20,
        "ground_truths": 20,
    }
    await publish(redis, events)  # at-least-once delivery: the very same events again
    await wait_drained(redis)
    assert await stored_counts(services.database_url, user_id) == first


async def test_events_are_appended_one_entry_each_in_order(services: ServiceUrls, redis: Redis) -> None:
    from app.telemetry.events import decode
    from app.telemetry.stream import add_events

    user_id, models = await make_user_and_models(services.database_url)
    events = query_events(user_id, models)
    pipe = redis.pipeline(transaction=False)
    add_events(pipe, events)
    pipe.xrevrange(STREAM, count=len(events))
    *_appended, newest = await pipe.execute()
    entries = list(reversed(newest))
    assert [decode(fields[FIELD]) for _id, fields in entries] == events
    assert all(set(fields) == {FIELD} for _id, fields in entries)
    assert [eid for eid, _f in entries] == sorted(eid for eid, _f in entries)
    await redis.xdel(
        STREAM, *[eid for eid, _f in entries]
    )  # nobody writes them here: not left for other tests' writers


async def test_copy_of_a_replay_fails_loudly_for_every_table(services: ServiceUrls, redis: Redis) -> None:
    """The COPY path relies on this: a row already there is a unique violation, never a second row."""
    import asyncpg

    from app.telemetry.events import ChatEvent, ChatMessageEvent, QueryEvent
    from app.workers.telemetry_writer import Entry, _write_batch
    from db.engine import plain_url

    user_id, models = await make_user_and_models(services.database_url)
    chat_id = uuid.uuid4()
    query, *gens, feedback = query_events(user_id, models)
    turn = QueryEvent(
        meta_query_id=uuid.uuid4(), user_id=user_id, query_type="chat", timestamp=utcnow(), chat_id=chat_id
    )
    events = [
        ChatEvent(chat_id=chat_id, user_id=user_id, title="t", created_at=utcnow()),
        turn,
        ChatMessageEvent(
            message_id=uuid.uuid4(),
            user_id=user_id,
            chat_id=chat_id,
            meta_query_id=turn.meta_query_id,
            role="user",
            content="hi",
            created_at=utcnow(),
        ),
        query,
        *gens,
        feedback,
    ]
    entries = [Entry(entry_id=f"{i + 1}-0".encode(), raw=b"", event=ev) for i, ev in enumerate(events)]
    conn = await asyncpg.connect(plain_url(services.database_url))
    try:
        async with conn.transaction():
            out = await _write_batch(conn, entries, _KEYS.sealer(), copy=True)
        assert len(out.done) == len(entries) and not out.deferred
        # Each event that writes a row of its own, replayed alone, must make the COPY fail and write nothing.
        for e in entries[1:]:
            with pytest.raises(asyncpg.UniqueViolationError):
                async with conn.transaction():
                    await _write_batch(conn, [e], _KEYS.sealer(), copy=True)
        # The same replays through INSERT ... ON CONFLICT change nothing.
        async with conn.transaction():
            out = await _write_batch(conn, entries, _KEYS.sealer(), copy=False)
        assert len(out.done) == len(entries)
        chat_rows = await conn.fetchval("SELECT count(*) FROM chat_message WHERE chat_id = $1", chat_id)
    finally:
        await conn.close()
    assert chat_rows == 1
    assert await stored_counts(services.database_url, user_id) == {
        "queries": 2,
        "contexts": 1,
        "completion_queries": 1,
        "generations": 2,
        "accepted": 1,
        "ground_truths": 1,
    }


async def test_copy_batch_with_replayed_rows_falls_back_and_writes_each_row_once(
    services: ServiceUrls, redis: Redis
) -> None:
    user_id, models = await make_user_and_models(services.database_url)
    w = TelemetryWriter(
        services.redis_url, services.database_url, f"t-{uuid.uuid4().hex[:8]}", copy_min_events=10
    )
    task = asyncio.create_task(w.run())
    try:
        old = [e for _ in range(30) for e in query_events(user_id, models)]
        await publish(redis, old)
        await wait_drained(redis)
        assert w.stats.copy_conflicts == 0
        new = [e for _ in range(30) for e in query_events(user_id, models)]
        # One batch of new events with old ones (a writer that died between commit and ack) and a duplicate.
        await publish(redis, [*new[:60], *old[::3], new[60], *new[60:]])
        await wait_drained(redis)
        assert w.stats.copy_conflicts >= 1
        assert (await stream_status(redis))["pending"] == 0
    finally:
        w.stop()
        await task
    assert await stored_counts(services.database_url, user_id) == {
        "queries": 60,
        "contexts": 60,
        "completion_queries": 60,
        "generations": 120,
        "accepted": 60,
        "ground_truths": 60,
    }


@pytest.mark.parametrize("copy_min_events", [1, 10**9], ids=["copy", "insert"])
async def test_a_backlog_written_two_batches_at_a_time_keeps_every_event_once(
    services: ServiceUrls, redis: Redis, copy_min_events: int
) -> None:
    user_id, models = await make_user_and_models(services.database_url)
    queries = [query_events(user_id, models) for _ in range(300)]
    # Children in the batch before their parents, and parents in the batch being written beside theirs.
    events = [q[3] for q in queries[:50]] + [
        e for i, q in enumerate(queries) for e in (q[:3] if i < 50 else q)
    ]
    await publish(redis, events)  # the whole backlog is there before the writer starts
    w = TelemetryWriter(
        services.redis_url,
        services.database_url,
        f"t-{uuid.uuid4().hex[:8]}",
        batch_size=64,
        retry_interval_s=0.1,
        copy_min_events=copy_min_events,
        pipeline_depth=2,
    )
    task = asyncio.create_task(w.run())
    try:
        await wait_drained(redis, timeout_s=60)
    finally:
        w.stop()
        await task
    assert w.stats.batches >= len(events) // 64
    assert w.stats.dead_lettered == 0
    assert (await stream_status(redis))["pending"] == 0
    assert await stored_counts(services.database_url, user_id) == {
        "queries": 300,
        "contexts": 300,
        "completion_queries": 300,
        "generations": 600,
        "accepted": 300,
        "ground_truths": 300,
    }


async def test_feedback_before_its_generation_waits_instead_of_dropping(
    services: ServiceUrls, redis: Redis, writer: TelemetryWriter
) -> None:
    user_id, models = await make_user_and_models(services.database_url)
    query, gen_a, gen_b, feedback = query_events(user_id, models)
    await publish(redis, [feedback])
    deadline = time.monotonic() + 10
    while writer.stats.deferred == 0:
        assert time.monotonic() < deadline, "the early feedback was never looked at"
        await asyncio.sleep(0.05)
    assert (await stored_counts(services.database_url, user_id))["ground_truths"] == 0
    await publish(redis, [gen_a, gen_b])  # generations before their query: deferred too
    await asyncio.sleep(0.3)
    await publish(redis, [query])
    await wait_drained(redis)
    counts = await stored_counts(services.database_url, user_id)
    assert counts["generations"] == 2 and counts["accepted"] == 1 and counts["ground_truths"] == 1
    assert (await stream_status(redis))["pending"] == 0


async def test_late_events_of_a_deleted_account_are_dropped_not_deferred(
    services: ServiceUrls, redis: Redis, writer: TelemetryWriter
) -> None:
    gone = uuid.uuid4()  # no such user (any more): nothing of it may be written, and nothing may wait for it
    _user, models = await make_user_and_models(services.database_url)
    events = query_events(gone, models)
    await publish(redis, events[1:] + events[:1])  # the dependent events first
    await wait_drained(redis, timeout_s=10)
    assert await stored_counts(services.database_url, gone) == {
        "queries": 0,
        "contexts": 0,
        "completion_queries": 0,
        "generations": 0,
        "accepted": 0,
        "ground_truths": 0,
    }
    assert writer.stats.dropped_orphans >= len(events)


async def test_malformed_and_failing_events_are_dead_lettered_with_a_reason(
    services: ServiceUrls, redis: Redis, writer: TelemetryWriter
) -> None:
    user_id, models = await make_user_and_models(services.database_url)
    dead_before = await redis.xlen(DEAD)
    good = query_events(user_id, models)
    poison = query_events(user_id, models, language_id=987654)  # no such language: the insert always fails
    await redis.xadd(STREAM, {FIELD: b'{"kind": "no-such-kind", "secret": "do not log"}'})
    await publish(redis, poison[:1] + good)
    await wait_drained(redis, timeout_s=30)
    counts = await stored_counts(services.database_url, user_id)
    assert counts["queries"] == 1 and counts["generations"] == 2  # the good query got through
    dead = await redis.xrange(DEAD, count=10_000)
    reasons = [fields[b"reason"].decode() for _id, fields in dead[dead_before:]]
    assert any(r.startswith("malformed event") for r in reasons), reasons
    assert any("ForeignKeyViolation" in r and "failed 3 times" in r for r in reasons), reasons
    assert all("do not log" not in r for r in reasons)
    status = await stream_status(redis)
    assert status["dead_letters"] >= dead_before + 2


async def test_shown_and_repeated_feedback_are_idempotent(
    services: ServiceUrls, redis: Redis, writer: TelemetryWriter
) -> None:
    from app.telemetry.events import ShownEvent

    user_id, models = await make_user_and_models(services.database_url)
    events = query_events(user_id, models, feedback=False)
    qid = events[0].meta_query_id
    shown_at = utcnow()
    shown = ShownEvent(meta_query_id=qid, model_id=models[0], shown_at=shown_at)
    feedback = FeedbackEvent(
        event_id=uuid.uuid4(),
        meta_query_id=qid,
        model_id=models[0],
        was_accepted=False,
        ground_truth="y",
        timestamp=utcnow(),
    )
    await publish(redis, [*events, shown, shown, feedback, feedback])
    await wait_drained(redis)
    import asyncpg

    from db.engine import plain_url

    conn = await asyncpg.connect(plain_url(services.database_url))
    try:
        row = await conn.fetchrow(
            "SELECT shown_at, was_accepted FROM had_generation WHERE meta_query_id = $1 AND model_id = $2",
            qid,
            models[0],
        )
        truths = await conn.fetchval("SELECT count(*) FROM ground_truth WHERE meta_query_id = $1", qid)
    finally:
        await conn.close()
    assert row["shown_at"] == [shown_at] and row["was_accepted"] is False
    assert truths == 1


async def _publish_steadily(redis: Redis, batches: list[list[Any]], pause_s: float) -> None:
    for batch in batches:
        await publish(redis, batch)
        await asyncio.sleep(pause_s)


async def test_postgres_outage_under_load_loses_nothing(
    services: ServiceUrls, embedded: EmbeddedServices, redis: Redis, writer: TelemetryWriter
) -> None:
    user_id, models = await make_user_and_models(services.database_url)
    queries = [query_events(user_id, models) for _ in range(600)]
    batches = [[e for q in queries[i : i + 20] for e in q] for i in range(0, len(queries), 20)]
    load = asyncio.create_task(_publish_steadily(redis, batches, pause_s=0.5))  # ~15 s of load
    await asyncio.sleep(2.0)
    await asyncio.to_thread(embedded.stop_postgres)
    down_at = time.monotonic()
    await asyncio.sleep(10.0)
    urls = await asyncio.to_thread(embedded.start)
    assert urls.database_url == services.database_url
    outage_s = time.monotonic() - down_at
    await load
    await wait_drained(redis, timeout_s=90)
    assert outage_s >= 10.0
    assert writer.stats.transient_errors > 0  # the writer did see the outage
    assert await stored_counts(services.database_url, user_id) == {
        "queries": 600,
        "contexts": 600,
        "completion_queries": 600,
        "generations": 1200,
        "accepted": 600,
        "ground_truths": 600,
    }


def test_writer_actor_killed_mid_stream_loses_nothing(ray_cluster: None, services: ServiceUrls) -> None:
    import ray

    from deployments.singletons import retire
    from deployments.telemetry_writer import ensure_writers, writer_name

    async def prepare() -> tuple[uuid.UUID, list[list[Any]]]:
        user_id, models = await make_user_and_models(services.database_url)
        return user_id, [query_events(user_id, models, feedback=False) for _ in range(2_500)]

    user_id, queries = asyncio.run(prepare())
    events = [e for q in queries for e in q]
    chunks = [events[i : i + 500] for i in range(0, len(events), 500)]
    # 2,500 more events: feedback for every query, which must find its generation whenever it is written.
    feedbacks = [
        FeedbackEvent(
            event_id=uuid.uuid4(),
            meta_query_id=q[1].meta_query_id,
            model_id=q[1].model_id,
            was_accepted=True,
            ground_truth="g",
            timestamp=utcnow(),
        )
        for q in queries
    ]
    assert len(events) + len(feedbacks) == 10_000
    (handle,) = ensure_writers(
        services.redis_url, services.database_url, 1, {"batch_size": 200}, namespace="code4me-test-writers"
    )
    pid_before = ray.get(handle.pid.remote(), timeout=60)

    async def load_and_kill() -> None:
        redis = Redis.from_url(services.redis_url)
        try:
            for n, chunk in enumerate(chunks):
                await publish(redis, chunk)
                if n == 2:
                    # Mid-stream: once some queries are written, while most events are not even published.
                    deadline = time.monotonic() + 30
                    while (await stored_counts(services.database_url, user_id))["queries"] == 0:
                        assert time.monotonic() < deadline, "the writer actor wrote nothing"
                        await asyncio.sleep(0.02)
                    ray.kill(handle, no_restart=False)
            for i in range(0, len(feedbacks), 500):
                await publish(redis, feedbacks[i : i + 500])
            await wait_drained(redis, timeout_s=120)
        finally:
            await redis.aclose()

    try:
        asyncio.run(load_and_kill())
        assert ray.get(handle.pid.remote(), timeout=60) != pid_before  # Ray restarted the writer
    finally:
        # Retired: left running, it would go on consuming the telemetry stream of later modules' in-process
        # apps all session long and seal their rows with the Ray processes' keyring.
        retire(writer_name(0), namespace="code4me-test-writers")
    assert asyncio.run(stored_counts(services.database_url, user_id)) == {
        "queries": 2_500,
        "contexts": 2_500,
        "completion_queries": 2_500,
        "generations": 5_000,
        "accepted": 2_500,
        "ground_truths": 2_500,
    }
