"""Embedded PostgreSQL (pgvector) and Redis: real servers, started under a tmp data directory."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.infra.settings import EMBEDDED_REDIS_MAXMEMORY_BYTES
from serve.embedded import EmbeddedServices, ServiceUrls, resolve_services

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SOCKET_LIMIT = 107  # bytes in sun_path on Linux, without the terminating NUL


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose sockets would not fit in sun_path, with a space in it for quoting."""
    path = tmp_path_factory.mktemp("embedded") / ("a rather long data directory name " + "x" * 70)
    assert len(os.fsencode(path / "postgres" / ".s.PGSQL.5432")) > SOCKET_LIMIT
    return path


@pytest.fixture(scope="module")
def services(data_dir: Path) -> Iterator[EmbeddedServices]:
    svc = EmbeddedServices(data_dir)
    began = time.perf_counter()
    svc.start()
    print(f"\ncold start (initdb + both servers): {time.perf_counter() - began:.2f} s")
    try:
        yield svc
    finally:
        svc.stop()
        assert svc.postgres_pid() is None and svc.redis_pid() is None


async def _pg_connect(urls: ServiceUrls) -> asyncpg.Connection:
    return await asyncpg.connect(urls.database_dsn, timeout=10)


def _redis(urls: ServiceUrls) -> aioredis.Redis:
    return aioredis.from_url(urls.redis_url, decode_responses=True)


async def _put_row_and_key(urls: ServiceUrls, row_id: int, key: str) -> None:
    conn = await _pg_connect(urls)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS kept_items (id int PRIMARY KEY, embedding vector(3))")
        await conn.execute("INSERT INTO kept_items VALUES ($1, $2::vector)", row_id, f"[{row_id},2,3]")
    finally:
        await conn.close()
    client = _redis(urls)
    try:
        await client.set(key, "kept")  # no TTL
    finally:
        await client.aclose()


async def _assert_row_and_key(urls: ServiceUrls, row_id: int, key: str) -> None:
    conn = await _pg_connect(urls)
    try:
        value = await conn.fetchval("SELECT embedding::text FROM kept_items WHERE id = $1", row_id)
    finally:
        await conn.close()
    assert value == f"[{row_id},2,3]"
    client = _redis(urls)
    try:
        assert await client.get(key) == "kept"
    finally:
        await client.aclose()


async def _assert_down(urls: ServiceUrls) -> None:
    with pytest.raises((OSError, asyncpg.PostgresError, asyncio.TimeoutError)):
        await asyncpg.connect(urls.database_dsn, timeout=2)
    client = _redis(urls)
    try:
        with pytest.raises(redis.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()


def test_long_data_dir_gets_short_socket_paths(services: EmbeddedServices, data_dir: Path) -> None:
    urls = services.start()
    assert urls.database_url.startswith("postgresql+asyncpg://postgres@/postgres?host=/")
    socket_dir = urls.database_url.split("host=", 1)[1]
    assert len(os.fsencode(Path(socket_dir) / ".s.PGSQL.5432")) <= SOCKET_LIMIT
    redis_socket = urls.redis_url.removeprefix("unix://").split("?", 1)[0]
    assert urls.redis_url.endswith("?db=0") and Path(redis_socket).is_socket()
    assert len(os.fsencode(redis_socket)) <= SOCKET_LIMIT
    # The data itself stays under data_dir.
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert (data_dir / "redis" / "appendonly.aof").exists()


async def test_pgvector_with_asyncpg_and_sqlalchemy(services: EmbeddedServices) -> None:
    urls = services.start()
    conn = await _pg_connect(urls)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS vec_items (id int PRIMARY KEY, embedding vector(3))")
        await conn.execute("TRUNCATE vec_items")
        await conn.executemany(
            "INSERT INTO vec_items VALUES ($1, $2::vector)",
            [(1, "[1,2,3]"), (2, "[9,9,9]"), (3, "[1,2,2.5]")],
        )
        nearest = await conn.fetch("SELECT id FROM vec_items ORDER BY embedding <-> '[1,2,2]' LIMIT 2")
        assert [r["id"] for r in nearest] == [3, 1]
        assert await conn.fetchval("SELECT embedding::text FROM vec_items WHERE id = 1") == "[1,2,3]"
        with pytest.raises(asyncpg.DataError):  # the column really is vector(3)
            await conn.execute("INSERT INTO vec_items VALUES (4, '[1,2]'::vector)")
    finally:
        await conn.close()

    engine = create_async_engine(urls.database_url)
    try:
        async with engine.connect() as sa_conn:
            version = (
                await sa_conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
            ).scalar()
            count = (await sa_conn.execute(text("SELECT count(*) FROM vec_items"))).scalar()
        assert version and count == 3
    finally:
        await engine.dispose()


async def test_redis_expired_keyevent_via_pubsub(services: EmbeddedServices) -> None:
    urls = services.start()
    client = _redis(urls)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe("__keyevent@0__:expired")
        key = f"session:{uuid.uuid4().hex}"
        await client.set(key, "1", ex=1)
        deadline = time.monotonic() + 10
        got = None
        while time.monotonic() < deadline:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg and msg["type"] == "message" and msg["data"] == key:
                got = msg
                break
        assert got is not None, "no expired keyevent received"
        assert got["channel"] == "__keyevent@0__:expired"
    finally:
        await pubsub.aclose()
        await client.aclose()


async def _memory_config(urls: ServiceUrls) -> tuple[int, str]:
    client = _redis(urls)
    try:
        config = await client.config_get("maxmemory*")
    finally:
        await client.aclose()
    return int(config["maxmemory"]), config["maxmemory-policy"]


async def test_redis_has_a_memory_limit_and_does_not_evict(
    services: EmbeddedServices, data_dir: Path
) -> None:
    urls = services.start()
    assert await _memory_config(urls) == (EMBEDDED_REDIS_MAXMEMORY_BYTES, "noeviction")
    assert "maxmemory-policy noeviction" in (services.redis_dir / "redis.conf").read_text()
    # A start that adopts the running server applies its own settings (they may have changed since).
    other = EmbeddedServices(
        data_dir,
        postgres=False,
        stop_at_exit=False,
        redis_maxmemory_bytes=64 * 1024 * 1024,
        redis_maxmemory_policy="volatile-lru",
    )
    try:
        assert other.start().redis_url == urls.redis_url
        assert await _memory_config(urls) == (64 * 1024 * 1024, "volatile-lru")
    finally:
        services.start()  # back to the defaults
    assert await _memory_config(urls) == (EMBEDDED_REDIS_MAXMEMORY_BYTES, "noeviction")


async def test_data_survives_stop_and_start(services: EmbeddedServices, data_dir: Path) -> None:
    urls = services.start()
    await _put_row_and_key(urls, 100, "persistent:stop-start")

    services.stop()
    assert services.postgres_pid() is None and services.redis_pid() is None
    await _assert_down(urls)
    assert not Path(urls.database_url.split("host=", 1)[1]).exists()  # short socket dir cleaned up
    services.stop()  # idempotent

    again = EmbeddedServices(data_dir)  # a fresh object, as a new process would make
    began = time.perf_counter()
    urls2 = again.start()
    print(f"\nwarm start after clean stop: {time.perf_counter() - began:.2f} s")
    assert urls2 == urls  # stable URLs: same data dir, same sockets
    await _assert_row_and_key(urls2, 100, "persistent:stop-start")


async def test_second_start_adopts_and_gc_does_not_stop(services: EmbeddedServices, data_dir: Path) -> None:
    urls = services.start()
    pg_pid, redis_pid = services.postgres_pid(), services.redis_pid()
    assert pg_pid and redis_pid

    other = EmbeddedServices(data_dir, stop_at_exit=False)
    began = time.perf_counter()
    assert other.start() == urls
    print(f"\nstart() adopting running servers: {time.perf_counter() - began:.3f} s")
    assert (other.postgres_pid(), other.redis_pid()) == (pg_pid, redis_pid)  # nothing new started

    ref = weakref.ref(other)
    del other
    gc.collect()
    assert ref() is None  # really collected ...
    assert (services.postgres_pid(), services.redis_pid()) == (pg_pid, redis_pid)  # ... servers untouched
    await _put_row_and_key(urls, 200, "persistent:gc")


async def test_killed_starter_leaves_servers_for_the_next_start(
    services: EmbeddedServices, data_dir: Path
) -> None:
    services.stop()
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from serve.embedded import EmbeddedServices
        svc = EmbeddedServices(Path({str(data_dir)!r}))
        svc.start()
        print(svc.postgres_pid(), svc.redis_pid(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit, no finally: as if OOM-killed
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pg_pid, redis_pid = (int(x) for x in proc.stdout.split())

    # The orphans keep serving; the next start() adopts them instead of starting new ones.
    assert (services.postgres_pid(), services.redis_pid()) == (pg_pid, redis_pid)
    urls = services.start()
    assert (services.postgres_pid(), services.redis_pid()) == (pg_pid, redis_pid)
    await _assert_row_and_key(urls, 100, "persistent:stop-start")


async def test_normal_interpreter_exit_stops_what_it_started(
    services: EmbeddedServices, data_dir: Path
) -> None:
    services.stop()
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from serve.embedded import EmbeddedServices
        svc = EmbeddedServices(Path({str(data_dir)!r}))
        svc.start()
        print(svc.postgres_pid(), svc.redis_pid(), flush=True)
        del svc  # dropped without stop(): the atexit hook still stops the servers
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    pg_pid, redis_pid = (int(x) for x in proc.stdout.split())
    for pid in (pg_pid, redis_pid):  # gone (or a zombie waiting for init to reap it)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert services.postgres_pid() is None and services.redis_pid() is None
    assert services.start()  # and the data directory is fine for the next run
    await _assert_row_and_key(services.urls, 100, "persistent:stop-start")


async def test_recovers_after_server_crash_and_stale_pid_files(
    services: EmbeddedServices, data_dir: Path
) -> None:
    urls = services.start()
    await _put_row_and_key(urls, 300, "persistent:crash")
    pg_pid, redis_pid = services.postgres_pid(), services.redis_pid()
    assert pg_pid and redis_pid

    # Crash both servers hard, postgres' backends with it.
    postmaster = psutil.Process(pg_pid)
    victims = [postmaster, *postmaster.children(recursive=True), psutil.Process(redis_pid)]
    for proc in victims:
        proc.kill()
    psutil.wait_procs(victims, timeout=10)
    # Worst case for pid files: they name a live, unrelated process (pid reuse after a reboot
    # or in a container); postgres on its own would refuse to start.
    pid_line = f"{os.getpid()}\n"
    pm = data_dir / "postgres" / "postmaster.pid"
    assert pm.exists()
    pm.write_text(pid_line + pm.read_text().split("\n", 1)[1])
    (data_dir / "redis" / "redis.pid").write_text(pid_line)
    assert services.postgres_pid() is None and services.redis_pid() is None

    assert services.start() == urls
    assert services.postgres_pid() not in (None, pg_pid)
    assert services.redis_pid() not in (None, redis_pid)
    await _assert_row_and_key(urls, 300, "persistent:crash")
    await _assert_row_and_key(urls, 200, "persistent:gc")


def test_resolve_services_with_both_urls_starts_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "unused"
    db = "postgresql+asyncpg://user:secret@db.example:5432/code4me"
    rd = "redis://cache.example:6379/0"
    urls, services = resolve_services(db, rd, data_dir)
    assert services is None
    assert urls == ServiceUrls(database_url=db, redis_url=rd)
    assert not data_dir.exists()


async def test_resolve_services_starts_only_what_is_missing(tmp_path: Path) -> None:
    db = "postgresql+asyncpg://user:secret@db.example:5432/code4me"
    urls, services = resolve_services(db, None, tmp_path)
    assert services is not None
    try:
        assert urls.database_url == db
        assert not (tmp_path / "postgres").exists()
        client = redis.asyncio.from_url(urls.redis_url)
        try:
            assert await client.ping()
            config = await client.config_get("notify-keyspace-events")
            assert set("Ex") <= set(config["notify-keyspace-events"])
        finally:
            await client.aclose()
    finally:
        services.stop()
    assert services.redis_pid() is None
