"""Domain errors and the one place that maps them (and validation failures) to HTTP answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class DomainError(Exception):
    """Base of errors a client can cause; status and message go to the client unchanged."""

    status_code = 400

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers


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


class RateLimited(DomainError):
    """Too many requests in the window."""

    status_code = 429


class ServiceUnavailable(DomainError):
    """A backing service (database, Redis, models) is down; retry later."""

    status_code = 503


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only location, message and type: echoing the offending input could leak code or passwords.
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into `{"message": ...}` answers."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse({"message": exc.message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = _field_errors(exc)
        fields = ", ".join(".".join(d["loc"][1:] or d["loc"]) + f": {d['msg']}" for d in details)
        return JSONResponse({"message": f"Invalid request: {fields}", "details": details}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Route and exception type only: never the body, cookies or headers.
        log.exception("unhandled error on %s %s (%s)", request.method, request.url.path, type(exc).__name__)
        return JSONResponse({"message": "Internal server error"}, status_code=500)
