"""Domain errors and the one place that maps them (and validation failures) to HTTP answers."""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class DomainError(Exception):
    """Base of errors a client can cause; status and message go to the client unchanged."""

    status_code = 400

    def __init__(
        self, message: str, *, headers: dict[str, str] | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers
        # The request field at fault, where one is (OpenAI-style error bodies name it).
        self.param = param

    @staticmethod
    def with_status(status: int, message: str, headers: Mapping[str, str] | None = None) -> DomainError:
        """A domain error of a given status (for errors raised as Starlette HTTPExceptions)."""
        error = DomainError(message, headers=dict(headers) if headers else None)
        error.status_code = status
        return error


class BadRequest(DomainError):
    """The request is well-formed but makes no sense."""

    status_code = 400


class Unauthorized(DomainError):
    """Missing, invalid or expired credentials."""

    status_code = 401


class Forbidden(DomainError):
    """Authenticated, but not allowed to touch this object."""

    status_code = 403


class NotFound(DomainError):
    """The object does not exist (or is not visible to the caller)."""

    status_code = 404


class Conflict(DomainError):
    """The object already exists or is in a conflicting state."""

    status_code = 409


class PayloadTooLarge(DomainError):
    """The body or a field is over its limit."""

    status_code = 413


class Unprocessable(DomainError):
    """A field value is valid JSON but not acceptable (unknown id, bad reference)."""

    status_code = 422


class InvalidInput(Unprocessable):
    """A body, message, path or query that does not match its schema: which fields and why.

    Only locations, reasons and error types are kept: echoing the offending input could leak code or
    passwords. One message format for HTTP, WebSocket and form posts.
    """

    # Where FastAPI says a field was found; it goes from the message (`body.model_ids` -> `model_ids`).
    SOURCES = frozenset({"body", "query", "path", "header", "cookie"})

    def __init__(self, errors: Sequence[Mapping[str, Any]]) -> None:
        self.details = [
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
            for err in errors
        ]

        def where(loc: Sequence[str]) -> str:
            return ".".join(loc[1:] if len(loc) > 1 and loc[0] in self.SOURCES else loc) or "body"

        fields = ", ".join(f"{where(d['loc'])}: {d['msg']}" for d in self.details)
        super().__init__(f"Invalid request: {fields}")


class RateLimited(DomainError):
    """Too many requests in the window."""

    status_code = 429


class InternalError(DomainError):
    """A bug on our side (never raised on purpose: what UnhandledErrorMiddleware answers)."""

    status_code = 500


class ServiceUnavailable(DomainError):
    """A backing service (database, Redis, models) is down; retry later."""

    status_code = 503


# Exceptions meaning a backing service is down: not the client's mistake, not a bug either (503, retry).
OUTAGES: tuple[type[Exception], ...] = (RedisError, OperationalError, InterfaceError, PoolTimeout)
RETRY_AFTER_S = 5


def as_domain_error(exc: BaseException) -> DomainError | None:
    """The answer an exception deserves wherever it surfaces (HTTP, ASGI, WebSocket, HTML pages); None for a bug."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, RequestValidationError):
        return InvalidInput(exc.errors())
    if isinstance(exc, StarletteHTTPException):
        return DomainError.with_status(exc.status_code, str(exc.detail), exc.headers)
    if isinstance(exc, OUTAGES):
        which = "Redis" if isinstance(exc, RedisError) else "The database"
        return ServiceUnavailable(
            f"{which} is unavailable; retry later", headers={"Retry-After": str(RETRY_AFTER_S)}
        )
    return None


MAX_LOGGED_FRAMES = 12


def _short_path(filename: str) -> str:
    """`app/services/pipeline.py` or `starlette/routing.py`: the path from its package root on."""
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in filename:
            return filename.rsplit(marker, 1)[1]
    parts = filename.replace("\\", "/").split("/")
    for root in ("app", "db", "deployments", "serve", "tests", "bench"):
        if root in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(root) :])
    return parts[-1]


def describe(exc: BaseException) -> str:
    """An exception on one line, by type and code locations only: its message may carry request data.

    `KeyError at app/a.py:12 in f > app/b.py:30 in g (from ValueError)`: the innermost frames last, at
    most MAX_LOGGED_FRAMES of them, the chain of causes by type. One line, so that a log file holds one
    record per error (a multi-line traceback became dozens of records in a Serve replica's log).
    """
    frames = traceback.extract_tb(exc.__traceback__)[-MAX_LOGGED_FRAMES:]
    where = " > ".join(f"{_short_path(f.filename)}:{f.lineno} in {f.name}" for f in frames)
    causes: list[str] = []
    seen = {id(exc)}
    inner = exc.__cause__ or exc.__context__
    while inner is not None and id(inner) not in seen and len(causes) < 4:
        seen.add(id(inner))
        causes.append(type(inner).__name__)
        inner = inner.__cause__ or inner.__context__
    chain = f" (from {' < '.join(causes)})" if causes else ""
    return f"{type(exc).__name__} at {where or '(no frames)'}{chain}"


def log_sanitised(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """Log an unexpected exception on one line, by type and code locations only (see `describe`)."""
    logger.error("%s: %s", what, describe(exc))


def answer_of(exc: BaseException, where: str) -> DomainError:
    """The one mapping: what any exception answers (`where` names the route or operation for the log).

    Domain errors and invalid input as they are; an outage 503 with Retry-After (logged as a warning, by
    type); anything else is a bug: 500, logged on one line by type and code locations only.
    """
    problem = as_domain_error(exc)
    if problem is None:
        log.error("unhandled %s on %s: %s", type(exc).__name__, where, describe(exc))
        return InternalError("Internal server error")
    if isinstance(problem, ServiceUnavailable):
        log.warning("service down on %s (%s)", where, type(exc).__name__)
    return problem


# Paths answered in OpenAI's error shape (the OpenAI-compatible API; its clients parse nothing else).
OPENAI_PREFIX = "/openai/"
# OpenAI answers 400 for every request it finds invalid (over the context length included); so do we there.
_OPENAI_STATUS = {413: 400, 422: 400}
_OPENAI_CODES = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    413: "context_length_exceeded",
    422: "invalid_value",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


def error_body(problem: DomainError) -> dict[str, Any]:
    """The JSON of an error answer: `{"message"}`, with the field details of invalid input."""
    body: dict[str, Any] = {"message": problem.message}
    if isinstance(problem, InvalidInput):
        body["details"] = problem.details
    return body


def openai_error(problem: DomainError) -> tuple[int, dict[str, Any]]:
    """Status and body of an error in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`."""
    status = _OPENAI_STATUS.get(problem.status_code, problem.status_code)
    param = problem.param
    if param is None and isinstance(problem, InvalidInput) and problem.details:
        loc = problem.details[0]["loc"]
        param = ".".join(loc[1:] if len(loc) > 1 and loc[0] in InvalidInput.SOURCES else loc) or None
    code = "model_not_found" if problem.status_code == 404 and param == "model" else None
    kind = (
        "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    )
    error = {
        "message": problem.message,
        "type": kind,
        "param": param,
        "code": code or _OPENAI_CODES.get(problem.status_code),
    }
    return status, {"error": error}


def shaped(problem: DomainError, path: str) -> tuple[int, dict[str, Any]]:
    """Status and body of an error answer on a path: OpenAI's shape under OPENAI_PREFIX, ours elsewhere."""
    if path.startswith(OPENAI_PREFIX):
        return openai_error(problem)
    return problem.status_code, error_body(problem)


async def send_error(send: Send, exc: DomainError, path: str = "") -> None:
    """Answer a domain error from pure ASGI middleware (outside FastAPI's exception handlers)."""
    status, shape = shaped(exc, path)
    body = json.dumps(shape).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_of(scope: Scope) -> str:
    """The matched route template (`/api/completion/{meta_query_id}`): raw paths can hold tokens."""
    return getattr(scope.get("route"), "path", None) or "(unmatched route)"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handler that turns exceptions into `{"message": ...}` answers (through `answer_of`)."""

    async def _answer(request: Request, exc: Exception) -> JSONResponse:
        problem = answer_of(exc, f"{request.method} {route_of(request.scope)}")
        status, body = shaped(problem, request.url.path)
        return JSONResponse(body, status_code=status, headers=problem.headers)

    for kind in (DomainError, RequestValidationError, StarletteHTTPException, *OUTAGES):
        app.add_exception_handler(kind, _answer)


# Messages after which the client has its answer (or the socket is closed).
ANSWER_STARTS = ("http.response.start", "websocket.close", "websocket.http.response.start")


class UnhandledErrorMiddleware:
    """The last line: a bug answers 500 (a WebSocket closes with 1011) and goes no further.

    Starlette's own error middleware re-raises after answering, and the servers above it (uvicorn,
    Ray Serve's replica: "Request failed.") then log the exception with its message, which can carry
    request data (SQL parameters, tokens, code). Here only the route template, the exception type and
    the code locations are logged; bodies, cookies and headers never are.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; swallow and log (sanitised) whatever escapes it."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] in ANSWER_STARTS
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - deliberately the catch-all
            problem = answer_of(exc, f"{scope.get('method', 'WEBSOCKET')} {route_of(scope)}")
            if started:
                return  # the answer is under way (or the socket closed): nothing more can be said
            if scope["type"] == "http":
                await send_error(send, problem, scope.get("path", ""))
            else:
                with contextlib.suppress(Exception):  # the client may be gone already
                    await send({"type": "websocket.close", "code": 1011, "reason": "Internal server error"})
