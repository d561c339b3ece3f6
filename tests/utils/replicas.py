"""Extra ingress replicas in-process: own app and state, same PostgreSQL and Redis as the `api` fixture."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from app.bootstrap import build_state, close_state
from app.infra.settings import Settings
from app.infra.state import AppState
from app.main import create_app
from serve.embedded import ServiceUrls
from tests.utils.asgi_api import ENTRIES, ScriptedGateway, cards_of


@asynccontextmanager
async def replica(
    services: ServiceUrls, redis_url: str | None = None, **settings: Any
) -> AsyncIterator[tuple[FastAPI, AppState]]:
    """An app with its own state and settings (`Settings(environment="test", **settings)`)."""
    config = Settings(environment="test", **settings)

    def make_state():  # type: ignore[no-untyped-def]
        return build_state(
            config,
            services.database_url,
            redis_url or services.redis_url,
            ScriptedGateway(),
            cards_of(ENTRIES),
        )

    state = await make_state()
    app = create_app(make_state)
    app.state.c4m = state
    try:
        yield app, state
    finally:
        await close_state(state)


def client_for(
    app: FastAPI, address: str = "127.0.0.1", *, raise_app_exceptions: bool = True
) -> httpx.AsyncClient:
    """A client whose requests reach `app` from the socket peer `address`."""
    transport = httpx.ASGITransport(
        app=app, client=(address, 40000), raise_app_exceptions=raise_app_exceptions
    )
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def new_address() -> str:
    """A random private IPv4 address, so that tests never share a rate-limit window."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
