"""Session-wide real services: embedded PostgreSQL (pgvector) and Redis, migrated once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.infra.envelope import new_key_spec
from app.infra.state import AppState
from db.migrate import upgrade
from serve.embedded import EmbeddedServices, ServiceUrls
from serve.tuning import SERVE_ENV
from tests.utils.asgi_api import api_settings, running_api
from tests.utils.google_tokens import CLIENT_ID, GoogleKeys


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the whole test session."""
    return tmp_path_factory.mktemp("code4me-data")


@pytest.fixture(scope="session")
def embedded(data_dir: Path) -> Iterator[EmbeddedServices]:
    """The embedded servers themselves (fault tests stop and restart them)."""
    servers = EmbeddedServices(data_dir)
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def services(embedded: EmbeddedServices) -> ServiceUrls:
    """Real PostgreSQL and Redis, started once, schema migrated."""
    urls = embedded.urls
    upgrade(urls.database_url)
    return urls


@pytest.fixture(scope="module")
async def api(services: ServiceUrls, data_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The FastAPI app in-process on the real services (scripted models); yields a client and its state."""
    async with running_api(services.database_url, services.redis_url, api_settings(data_dir)) as (
        client,
        state,
    ):
        yield client, state


@pytest.fixture(scope="module")
def keys() -> GoogleKeys:
    """The module's stand-in for Google's signing keys."""
    return GoogleKeys()


@pytest.fixture(scope="module")
async def google_api(
    services: ServiceUrls, data_dir: Path, keys: GoogleKeys, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The app with Google sign-in configured against the local key set (a file:// JWKS URL)."""
    jwks_url = keys.write_jwks(tmp_path_factory.mktemp("jwks") / "certs.json")
    settings = api_settings(data_dir, google_client_id=CLIENT_ID, google_jwks_url=jwks_url)
    async with running_api(services.database_url, services.redis_url, settings) as (client, state):
        yield client, state


def run(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine from sync test code."""
    return asyncio.run(coro)


def free_port() -> int:
    """A free loopback TCP port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# The shipped models under configs/local.yaml's names and pinned ids (the ids the plugin sends; every test
# app of the session shares one database, so a name keeps its id everywhere).
TINY_MODEL = {
    "name": "code4me-tiny",
    "id": 1,
    "model_id": "models/code4me-tiny",
    "family": "code4me",
    "num_cpus": 1,
    "num_replicas": 1,
    "is_default": True,
    "generation": {"max_new_tokens": 24, "time_budget_s": 10.0},
}
TINY_CHAT_MODEL = {
    "name": "code4me-tiny-chat",
    "id": 3,
    "model_id": "models/code4me-tiny-chat",
    "family": "code4me",
    "is_chat": True,
    "is_default": True,
    "max_context_tokens": 256,
    "num_cpus": 0.5,
    "num_replicas": 1,
    "generation": {"max_new_tokens": 32, "time_budget_s": 20.0},
}


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """Where the local Ray node exports Prometheus metrics."""
    return free_port()


# The keys the Serve app's processes seal stored code with (their environment at ray.init); tests open what
# it stored with them.
RAY_ENCRYPTION_KEYS = new_key_spec("ray-tests")


@pytest.fixture(scope="session")
def ray_cluster(metrics_port: int) -> Iterator[None]:
    """One local Ray instance for the session (logical CPUs above the 2 cores so several small replicas fit)."""
    import logging

    import ray

    # Ray's workers inherit the environment at ray.init: the Serve app's limits are lifted there (the
    # session signs up more users per minute from 127.0.0.1 than an IDE would); the limiter still runs.
    limits = {name: "1000000" for name in ("RATE_LIMIT_AUTH", "RATE_LIMIT_DEFAULT", "RATE_LIMIT_COMPLETION")}
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**limits, **SERVE_ENV, "ENCRYPTION_KEYS": RAY_ENCRYPTION_KEYS}.items():
            env.setenv(name, value)  # and Serve's request-path settings, as `code4me up` runs them
        ray.init(
            num_cpus=8,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            # Idle workers prestarted for 8 logical CPUs would cost the 2 real cores a minute of imports.
            _metrics_export_port=metrics_port,
            _system_config={
                "prestart_worker_first_driver": False,
                "enable_worker_prestart": False,
                "metrics_report_interval_ms": 1000,
            },
        )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def test_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight models built once: a long-running one, a misconfigured (failing) one, a chat one."""
    from tests.utils.tiny_models import build_random_model

    root = tmp_path_factory.mktemp("models")
    return {
        # Slow enough per token, and allowed enough tokens, that it is still decoding seconds later.
        "long": build_random_model(root / "long", seed=1, hidden_size=256, layers=4, positions=4096),
        "broken": build_random_model(root / "broken", vocab_size=100, seed=2),
        "chat": build_random_model(root / "chat", seed=3, chat=True),
    }


def registry(test_models: dict[str, Path]) -> list[dict]:
    """The session app's model registry: the default model twice, a failing one, a long-runner, a chat model."""
    return [
        TINY_MODEL,
        {**TINY_MODEL, "name": "code4me-tiny-twin", "id": None, "is_default": False},
        TINY_CHAT_MODEL,
        {"name": "broken", "model_id": str(test_models["broken"]), "family": "code4me", "num_cpus": 0.5},
        {
            "name": "long-runner",
            "model_id": str(test_models["long"]),
            "family": "code4me",
            "num_cpus": 0.5,
            "generation": {"max_new_tokens": 2048, "time_budget_s": 60.0},
        },
        {
            "name": "chatty",
            "model_id": str(test_models["chat"]),
            "family": "plain",
            "is_chat": True,
            "num_cpus": 0.5,
            "generation": {"max_new_tokens": 16, "time_budget_s": 20.0},
        },
    ]


@pytest.fixture(scope="session")
def app_settings(services: ServiceUrls):  # type: ignore[no-untyped-def]
    """Settings pointing the application at the embedded services."""
    from app.infra.settings import Settings

    # Its own Redis database: the Serve app's writer and reaper actors live all session long and must not
    # consume the telemetry stream (or expiry events) of the in-process apps of other test modules.
    return Settings(
        environment="test",
        encryption_keys=RAY_ENCRYPTION_KEYS,
        database_url=services.database_url,
        redis_url=ray_app_redis_url(services.redis_url),
    )


def ray_app_redis_url(url: str) -> str:
    """The embedded Redis URL pointed at database 1."""
    return url.replace("?db=0", "?db=1") if "?db=0" in url else url.rstrip("/") + "/1"


@pytest.fixture(scope="session")
def serve_http(ray_cluster: None) -> Iterator[str]:
    """Serve started once with its HTTP proxy on a free port (a second serve.start would keep the first port)."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


@pytest.fixture(scope="session")
def serve_app(serve_http: str, app_settings, test_models: dict[str, Path]) -> str:  # type: ignore[no-untyped-def]
    """The Serve application (ingress + models + embedder) on a real local Ray; returns its base URL."""
    from ray import serve

    from serve.builder import build_application

    app = build_application(
        {"models": registry(test_models), "embedding": {"enabled": True}},
        settings=app_settings,
        migrate=False,
    )
    serve.run(app, name="code4me", route_prefix="/")
    return serve_http
