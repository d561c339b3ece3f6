"""A redeploy with new settings reaches the running background workers (they used to keep their first ones)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import ray
from sqlalchemy import select

from db.engine import make_engine, make_sessionmaker
from db.tables import AuditEvent
from deployments.retention import start_retention_sweeper
from deployments.singletons import named_actors, retire
from deployments.telemetry_writer import WRITER_PREFIX, ensure_writers, writer_name
from serve.embedded import ServiceUrls


def _namespace() -> str:
    return f"code4me-test-workers-{uuid.uuid4().hex[:8]}"


def test_the_retention_sweeper_takes_a_new_interval(ray_cluster: None, services: ServiceUrls) -> None:
    namespace = _namespace()
    # What every ingress replica's constructor does, with RETENTION_SWEEP_INTERVAL_S = 3600.
    first = start_retention_sweeper(services.database_url, 3600, namespace=namespace)
    assert ray.get(first.schedule.remote(), timeout=60)["interval_s"] == 3600
    again = start_retention_sweeper(services.database_url, 3600, namespace=namespace)
    assert again._actor_id == first._actor_id  # another replica of the same deploy: the same worker
    # The setting changes and the application is redeployed: its new replicas start with 120.
    second = start_retention_sweeper(services.database_url, 120, namespace=namespace)
    assert second._actor_id != first._actor_id
    schedule = ray.get(second.schedule.remote(), timeout=60)
    assert schedule == {"interval_s": 120, "running": True}
    assert named_actors("retention-sweeper", namespace=namespace) == ["retention-sweeper"]
    retire("retention-sweeper", namespace=namespace)


async def _dated_records(database_url: str, days: tuple[int, ...]) -> list[int]:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as db:
            now = datetime.now(UTC)
            events = [AuditEvent(action="user.export", at=now - timedelta(days=d)) for d in days]
            db.add_all(events)
            await db.commit()
            return [e.audit_id for e in events if e.audit_id is not None]
    finally:
        await engine.dispose()


async def _still_there(database_url: str, ids: list[int]) -> list[bool]:
    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as db:
            query = select(AuditEvent.audit_id).where(AuditEvent.audit_id.in_(ids))  # type: ignore[union-attr]
            found = set((await db.execute(query)).scalars())
            return [i in found for i in ids]
    finally:
        await engine.dispose()


def test_the_retention_sweeper_purges_audit_records_past_audit_retention_days(
    ray_cluster: None, services: ServiceUrls
) -> None:
    namespace = _namespace()
    ids = asyncio.run(_dated_records(services.database_url, (40, 20)))
    # What the ingress passes with AUDIT_RETENTION_DAYS = 30.
    sweeper = start_retention_sweeper(services.database_url, 3600, 30, namespace=namespace)
    ray.get(sweeper.sweep.remote(), timeout=60)
    assert asyncio.run(_still_there(services.database_url, ids)) == [False, True]
    retire("retention-sweeper", namespace=namespace)


def test_telemetry_writers_take_a_new_batch_size_and_count(ray_cluster: None, services: ServiceUrls) -> None:
    namespace = _namespace()
    handles = ensure_writers(
        services.redis_url, services.database_url, 2, {"batch_size": 200}, namespace=namespace
    )
    assert [ray.get(h.status.remote(), timeout=60)["batch_size"] for h in handles] == [200, 200]
    # TELEMETRY_BATCH_SIZE=50 and TELEMETRY_WRITERS=1, then a redeploy.
    (writer,) = ensure_writers(
        services.redis_url, services.database_url, 1, {"batch_size": 50}, namespace=namespace
    )
    assert ray.get(writer.status.remote(), timeout=60)["batch_size"] == 50
    assert writer._actor_id != handles[0]._actor_id
    # The second writer stopped (the remaining one claims what it left pending).
    assert named_actors(WRITER_PREFIX, namespace=namespace) == [writer_name(0)]
    retire(writer_name(0), namespace=namespace)
