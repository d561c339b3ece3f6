"""The ContextIndexer Ray actor on a real local Ray with the embedder Serve deployment: it indexes by itself,
and a killed actor comes back and indexes what was marked meanwhile."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from app.context.edits import LineChange
from app.context.live_state import Owner, apply_updates
from db.engine import make_engine, make_sessionmaker
from db.tables import ContextChunk, Project, ProjectMember, User
from serve.embedded import ServiceUrls

APP = "ctx-indexer-test"
NAMESPACE = f"ctx-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def embedder_app(serve_http: str) -> Iterator[str]:
    """Only the embedder deployment, as an application of its own."""
    from ray import serve

    from deployments.embedder import Embedder

    serve.run(Embedder.options(name="embedder", num_replicas=1).bind(), name=APP, route_prefix=None)
    try:
        yield APP
    finally:
        serve.delete(APP)


@pytest.fixture
async def db(services: ServiceUrls) -> AsyncIterator[Any]:
    engine = make_engine(services.database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def consenting_project(sessionmaker: Any) -> Owner:
    async with sessionmaker() as db:
        user = User(
            email=f"{uuid.uuid4().hex}@example.org", name="x", config_id=1, preference={"store_context": True}
        )
        project = Project(project_name="actor")
        db.add_all([user, project])
        await db.flush()
        db.add(ProjectMember(project_id=project.project_id, user_id=user.user_id))
        await db.commit()
        return Owner(project.project_id, user.user_id)


async def edit(redis_url: str, owner: Owner, path: str, lines: list[str]) -> None:
    redis = Redis.from_url(redis_url)
    try:
        # Marked as changed long ago: due at once, whatever the actor's debounce.
        await apply_updates(
            redis,
            owner,
            {path: [LineChange("insert", 0, 0, lines)]},
            max_file_chars=100_000,
            max_files=100,
            ttl_ms=600_000,
            mark_dirty=True,
            now=time.time() - 3600,
        )
    finally:
        await redis.aclose()


async def chunks_of(sessionmaker: Any, owner: Owner, path: str, timeout_s: float = 90.0) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        async with sessionmaker() as db:
            n = (
                await db.execute(
                    select(func.count())
                    .select_from(ContextChunk)
                    .where(ContextChunk.project_id == owner.project_id, ContextChunk.file_path == path)  # type: ignore[arg-type]
                )
            ).scalar_one()
        if n or time.monotonic() > deadline:
            return int(n)
        await asyncio.sleep(0.5)


async def test_actor_indexes_and_survives_a_kill(services: ServiceUrls, embedder_app: str, db: Any) -> None:
    import ray

    from deployments.context_indexer import ensure_context_indexer

    owner = await consenting_project(db)
    actor = ensure_context_indexer(
        services.database_url, services.redis_url, embedder_app, namespace=NAMESPACE
    )
    assert ray.get(actor.ping.remote(), timeout=120)
    # Idempotent: a second ingress replica gets the same actor.
    again = ensure_context_indexer(
        services.database_url, services.redis_url, embedder_app, namespace=NAMESPACE
    )
    assert again._actor_id == actor._actor_id

    await edit(services.redis_url, owner, "one.py", ["def first_function():", "    return 1"])
    assert await chunks_of(db, owner, "one.py") >= 1

    ray.kill(actor, no_restart=False)
    await edit(services.redis_url, owner, "two.py", ["def second_function():", "    return 2"])
    assert await chunks_of(db, owner, "two.py") >= 1  # the restarted actor found the pending mark
    stats = ray.get(actor.stats.remote(), timeout=60)
    assert stats["pending"] == 0 and stats["failed"] == 0
    ray.kill(actor, no_restart=True)
