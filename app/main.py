"""The FastAPI application factory (importable and testable without Ray)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.bootstrap import close_state
from app.errors import install_error_handlers
from app.routers import (
    chat,
    completion,
    context,
    password_reset,
    ping,
    privacy,
    project,
    session,
    user,
    verification,
    ws,
)
from app.state import AppState

StateFactory = Callable[[], Awaitable[AppState]]


def create_app(make_state: StateFactory) -> FastAPI:
    """An app whose state (connections, registry) is built at startup by `make_state`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.c4m = await make_state()
        try:
            yield
        finally:
            await close_state(app.state.c4m)

    app = FastAPI(
        title="Code4me Serve",
        version="0.1.0",
        description="Code-completion research platform: the plugin-compatible API.",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    install_error_handlers(app)
    for module in (user, verification, password_reset, privacy, session, project, completion, context, chat, ws, ping):
        app.include_router(module.router)
    return app
