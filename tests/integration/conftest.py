"""Session-wide real services: embedded PostgreSQL (pgvector) and Redis, migrated once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.migrate import upgrade
from serve.embedded import EmbeddedServices, ServiceUrls


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the whole test session."""
    return tmp_path_factory.mktemp("code4me-data")


@pytest.fixture(scope="session")
def services(data_dir: Path) -> Iterator[ServiceUrls]:
    """Real PostgreSQL and Redis, started once, schema migrated."""
    embedded = EmbeddedServices(data_dir)
    urls = embedded.start()
    upgrade(urls.database_url)
    try:
        yield urls
    finally:
        embedded.stop()


def run(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine from sync test code."""
    return asyncio.run(coro)


def free_port() -> int:
    """A free loopback TCP port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TINY_MODEL = {
    "name": "code4me-tiny",
    "model_id": "models/code4me-tiny",
    "family": "code4me",
    "num_cpus": 1,
    "num_replicas": 1,
    "is_default": True,
    "generation": {"max_new_tokens": 24, "time_budget_s": 10.0},
}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray instance for the session (logical CPUs above the 2 cores so several small replicas fit)."""
    import logging

    import ray

    ray.init(
        num_cpus=8,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        # Idle workers prestarted for 8 logical CPUs would cost the 2 real cores a minute of imports.
        _system_config={"prestart_worker_first_driver": False, "enable_worker_prestart": False},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def serve_app(ray_cluster: None, services: ServiceUrls) -> Iterator[str]:
    """The Serve application (ingress + default model + embedder) on a real local Ray; yields its base URL."""
    from ray import serve

    from app.settings import Settings
    from serve.builder import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = Settings(environment="test", database_url=services.database_url, redis_url=services.redis_url)
    app = build_app({"models": [TINY_MODEL], "embedding": {"enabled": True}}, settings=settings, migrate=False)
    serve.run(app, name="code4me", route_prefix="/")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
