"""The FastAPI application factory (importable and testable without Ray)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.body_limit import BodyLimitMiddleware
from app.api.ratelimit import RateLimitMiddleware
from app.api.routes import (
    admin,
    api_tokens,
    chat,
    completion,
    context,
    openai_api,
    password_reset,
    ping,
    privacy,
    project,
    session,
    tabby,
    user,
    verification,
    ws,
)
from app.api.server_timing import ServerTimingMiddleware
from app.bootstrap import close_state
from app.errors import UnhandledErrorMiddleware, install_error_handlers
from app.infra.state import AppState
from app.schemas.common import error_responses

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
    # The last added runs first: floods are refused (429) before any body is read (413); bugs anywhere
    # below (limiter included) end in a sanitised log line and a 500.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RateLimitMiddleware)
    app.add_middleware(UnhandledErrorMiddleware)
    app.add_middleware(ServerTimingMiddleware)  # outermost: the whole of the app's time
    for module in (
        user,
        api_tokens,
        verification,
        password_reset,
        privacy,
        session,
        project,
        completion,
        context,
        chat,
        ws,
        admin,
    ):
        # Every /api route can answer these, whatever it declares itself: 400 for a body that is not
        # UTF-8 JSON or a bad Content-Length, 413 over the size limit, 422 for the schema, 429 rate
        # limited, 503 while Redis or PostgreSQL is down.
        app.include_router(module.router, responses=error_responses(400, 413, 422, 429, 503))
    # Tabby's HTTP API (API tokens; rate limited like the plugin's completion calls).
    app.include_router(tabby.router, responses=error_responses(400, 413, 422, 429, 503))
    # OpenAI's completions API (API tokens, rate limited alike; errors in OpenAI's body shape).
    app.include_router(openai_api.router)
    app.include_router(ping.router)  # liveness: never rate limited, no body
    return app
