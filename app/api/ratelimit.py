"""Sliding-window rate limits kept in Redis, so every ingress replica enforces the same global limit.

Algorithm: a sliding-window *log*. Each (route class, identity) has a sorted set of the accepted
requests' timestamps; one Lua script drops entries older than the window, counts the rest and adds
the new request only if the count is under the limit. Why this and not a sliding-window counter:

* exact: no burst of 2x the limit across a window boundary, no estimate;
* `Retry-After` is exact: when the oldest entry in the window leaves it;
* rejected requests are not recorded, so a client that keeps hammering is not locked out forever and
  memory per key is bounded by the limit (600 completion entries, ~30 KB, for a user at the ceiling);
* one atomic script per request (one round trip), using Redis's clock so replicas with skewed
  clocks still agree.

Identity: the user (`user:<id>`) when the request carries a valid auth token (on /v1 and /openai/v1: an API
token), else the client address (`addr:<ip or IPv6 /64>`, see app/infra/client_address.py). Auth routes
(sign-up, sign-in, verification, password reset) are always keyed by address: they are where passwords get
guessed.
Keying signed-in users by user rather than by address keeps a lab of students behind one NAT from
throttling each other.

Fail closed: when Redis cannot be asked (down, or every pooled connection busy past the pool's timeout),
the request is refused with the error map's outage answer (503, `Retry-After`), never let through
uncounted: otherwise exhausting the pool would switch the limits off.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api import auth
from app.errors import DomainError, RateLimited, answer_of, send_error
from app.identity import tokens
from app.infra.client_address import address_bucket, client_address_of, parse_networks
from app.infra.settings import Settings
from app.infra.state import AppState

RouteClass = Literal["auth", "completion", "default"]

# Path prefixes per class (a prefix matches itself and anything below it); first match wins.
AUTH_PREFIXES = ("/api/user/create", "/api/user/authenticate", "/api/user/verify", "/api/user/reset-password")
COMPLETION_PREFIXES = ("/api/completion", "/api/chat", "/api/ws")
# The routes of API tokens (Tabby's HTTP API, the OpenAI-compatible one), keyed by the token's user.
API_PREFIXES = ("/v1", "/openai/v1")
API_COMPLETION_PREFIXES = (
    "/v1/completions",
    "/v1/events",
    "/openai/v1/completions",
    "/openai/v1/beta/completions",
)
# Liveness probes from load balancers must never be refused.
EXEMPT_PATHS = ("/api/ping",)

KEY_PREFIX = f"{tokens.PREFIX}rl:"

# KEYS[1]: the window's sorted set. ARGV: limit, window in ms, a unique suffix for the member.
# Returns {allowed (1/0), remaining, retry_after_ms}.
SLIDING_WINDOW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, limit - count - 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, 0, tonumber(oldest[2]) + window - now}
"""


@dataclass(frozen=True)
class Decision:
    """The verdict on one request: allowed or not, and when to retry."""

    allowed: bool
    route_class: RouteClass
    limit: int
    remaining: int
    retry_after_s: int = 0

    def error(self, window_s: int) -> RateLimited:
        """The 429 for a refused request, with `Retry-After` in whole seconds."""
        return RateLimited(
            f"Too many {self.route_class} requests: the limit is {self.limit} per {window_s} s; "
            f"retry in {self.retry_after_s} s",
            headers={"Retry-After": str(self.retry_after_s), "X-RateLimit-Limit": str(self.limit)},
        )


def route_class_of(path: str) -> RouteClass | None:
    """The limit class of a path; None for paths that are not limited (outside /api, liveness)."""

    def under(prefixes: tuple[str, ...]) -> bool:
        return any(path == p or path.startswith(p + "/") for p in prefixes)

    if under(API_PREFIXES):
        return "completion" if under(API_COMPLETION_PREFIXES) else "default"
    if not under(("/api",)) or under(EXEMPT_PATHS):
        return None
    if under(AUTH_PREFIXES):
        return "auth"
    if under(COMPLETION_PREFIXES):
        return "completion"
    return "default"


class RateLimiter:
    """Checks and records requests against the per-class limits of the settings."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.trusted = parse_networks(settings.trusted_proxies)
        self._script = redis.register_script(SLIDING_WINDOW_LUA)

    def limit_of(self, route_class: RouteClass) -> int:
        """Requests allowed per window for a class."""
        return {
            "auth": self.settings.rate_limit_auth,
            "completion": self.settings.rate_limit_completion,
            "default": self.settings.rate_limit_default,
        }[route_class]

    async def check(self, identity: str, route_class: RouteClass) -> Decision:
        """Count one request of `identity` in `route_class`; the decision says whether it may proceed."""
        limit = self.limit_of(route_class)
        if not self.settings.rate_limit_enabled:
            return Decision(True, route_class, limit, limit)
        window_ms = self.settings.rate_limit_window_s * 1000
        key = f"{KEY_PREFIX}{route_class}:{identity}"
        allowed, remaining, retry_ms = await self._script(
            keys=[key], args=[limit, window_ms, secrets.token_hex(8)]
        )
        retry_s = max(1, math.ceil(int(retry_ms) / 1000)) if not allowed else 0
        return Decision(bool(allowed), route_class, limit, int(remaining), retry_s)

    async def identity_of(self, conn: HTTPConnection, route_class: RouteClass) -> str:
        """`user:<id>` for a valid auth token (except on auth routes), else `addr:<client address bucket>`."""
        path = conn.url.path
        if any(path == p or path.startswith(p + "/") for p in API_PREFIXES):
            state: AppState = conn.app.state.c4m
            api_token = await auth.peek_api_token(conn, state)  # the route reuses it
            if api_token is not None:
                return f"user:{api_token.user_id}"
        elif route_class != "auth":
            info = await auth.peek_auth(conn, self.redis, self.settings)  # the route's chain reuses it
            if info is not None:
                return f"user:{info.user_id}"
        return f"addr:{address_bucket(client_address_of(conn, self.trusted))}"

    async def check_connection(self, conn: HTTPConnection, route_class: RouteClass | None = None) -> Decision:
        """Count one request (or WebSocket connect/message) of this connection's caller."""
        route_class = route_class or route_class_of(conn.url.path) or "default"
        return await self.check(await self.identity_of(conn, route_class), route_class)


def limiter_of(state: AppState) -> RateLimiter:
    """A limiter on this ingress's Redis and settings (cheap: the script is loaded once per Redis server)."""
    return RateLimiter(state.redis, state.settings)


async def enforce(conn: HTTPConnection, route_class: RouteClass | None = None) -> Decision:
    """Count one request of the caller and raise RateLimited (429) when over the limit.

    For WebSocket handlers: `await enforce(websocket)` before each operation (connects are already
    counted by the middleware); catch RateLimited to answer `{"error": ...}` on the open socket.
    """
    state: AppState = conn.app.state.c4m
    decision = await limiter_of(state).check_connection(conn, route_class)
    if not decision.allowed:
        raise decision.error(state.settings.rate_limit_window_s)
    return decision


async def caller_key(conn: HTTPConnection) -> str:
    """Whom the limiter counts a connection as (`user:<id>`, else `addr:<bucket>`); the address while Redis is
    down. For per-caller bounds that must not cost a Redis call each (WebSocket operations in flight)."""
    limiter = limiter_of(conn.app.state.c4m)
    try:
        return await limiter.identity_of(conn, "completion")
    except RedisError:
        return f"addr:{address_bucket(client_address_of(conn, limiter.trusted))}"


class RateLimitMiddleware:
    """Pure ASGI middleware: every /api request and WebSocket connect is counted before its body is read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._limiter: RateLimiter | None = None

    def _limiter_for(self, state: AppState) -> RateLimiter:
        if (
            self._limiter is None
            or self._limiter.redis is not state.redis
            or self._limiter.settings is not state.settings
        ):
            self._limiter = limiter_of(state)
        return self._limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse with 429 and `Retry-After` when the caller is over its class's limit."""
        route_class = (
            route_class_of(scope.get("path", "")) if scope["type"] in ("http", "websocket") else None
        )
        state: AppState | None = getattr(scope["app"].state, "c4m", None) if route_class else None
        if route_class is None or state is None or not state.settings.rate_limit_enabled:
            await self.app(scope, receive, send)
            return
        try:
            decision = await self._limiter_for(state).check_connection(HTTPConnection(scope), route_class)
        except RedisError as exc:
            # Fail closed: a request that cannot be counted is not let through (an exhausted pool or a
            # Redis outage would otherwise switch the limits off). The outage answer of the error map:
            # 503 with Retry-After, never a 500.
            error: DomainError = answer_of(exc, f"rate limiter ({route_class})")
        else:
            if decision.allowed:
                await self.app(scope, receive, send)
                return
            error = decision.error(state.settings.rate_limit_window_s)
        if scope["type"] == "http":
            await send_error(send, error, scope.get("path", ""))
        else:
            await _deny_websocket(scope, receive, send, error)


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, error: DomainError) -> None:
    """Refuse a WebSocket handshake: the HTTP answer (429, 503) where the server supports it, else close
    (policy violation for a limit, try again later for an outage)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send_error(_as_websocket_denial(send), error)
    else:
        code = 1013 if error.status_code == 503 else 1008
        await send({"type": "websocket.close", "code": code, "reason": error.message[:120]})


def _as_websocket_denial(send: Send) -> Send:
    """A `send` that turns HTTP response messages into the WebSocket denial-response extension's."""

    async def denial_send(message: Message) -> None:
        await send({**message, "type": message["type"].replace("http.response", "websocket.http.response")})

    return denial_send
