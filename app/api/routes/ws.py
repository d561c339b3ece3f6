"""WebSockets: /api/ws/completion, /api/ws/completion/multi-file-context and /api/ws/chat.

Client messages are objects with one key naming the operation (`completion_request`,
`completion_feedback`, `multi_file_context_update`, `chat_request`, `chat_get`, `chat_delete`,
`cancel`) whose value is the REST body, plus an optional `request_id` that every reply echoes.
Replies:
* `{"request_id", "<operation>_response": <the REST answer>}` when an operation is done;
* `{"request_id", "completion_partial": {"meta_query_id", "completion": slot}}` per model as it finishes;
* `{"request_id", "chat_token": {"model_id", "model_name", "text"}}` per streamed chat piece;
* `{"request_id", "cancelled": true}` for a cancelled operation (and for the `cancel` itself);
* `{"request_id", "error": message, "status": http-like code}` for a bad message; the socket stays open.
Several operations may be in flight on one socket; each message is authenticated again (tokens expire).
At most `ws_max_inflight_per_socket` per socket and `ws_max_inflight_per_user` per caller on this replica:
one more is refused with a 429 error reply (`retry_after`), so one client cannot take every Redis and
database connection of the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, ValidationError
from starlette.websockets import WebSocketState

from app.api import ratelimit
from app.api.auth import completion_caller, credentials_of, identify
from app.api.routes import chat as chat_routes
from app.api.routes import completion as completion_routes
from app.api.routes import context as context_routes
from app.api.routing import SlashTolerantRouter
from app.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unprocessable,
    answer_of,
)
from app.infra.state import AppState, ModelInfo
from app.schemas.chat import ChatRequest
from app.schemas.completion import CompletionRequest, FeedbackRequest
from app.schemas.context import MultiFileContextUpdate
from app.services import chats, completions
from app.services.context_updates import update_context

log = logging.getLogger(__name__)
router = SlashTolerantRouter(prefix="/api/ws", tags=["websocket"])
MAX_MESSAGE_CHARS = 4 * 1024 * 1024
MAX_REQUEST_ID_CHARS = 256


class ChatGet(BaseModel):
    """`chat_get` over the socket: which page (counted from 0, as over HTTP)."""

    page_number: int = Field(default=0, ge=0, le=100_000, strict=True)  # `true` is not page 1


class ChatDelete(BaseModel):
    """`chat_delete` over the socket: which chat."""

    chat_id: uuid.UUID


class Cancel(BaseModel):
    """`cancel`: the request_id of the operation to stop."""

    request_id: str = Field(max_length=MAX_REQUEST_ID_CHARS)


def error_frame(request_id: str | None, problem: DomainError) -> dict[str, Any]:
    """A WebSocket error reply: the HTTP answer's status and message (and `retry_after` on an outage)."""
    reply: dict[str, Any] = {
        "request_id": request_id,
        "error": problem.message,
        "status": problem.status_code,
    }
    if problem.headers and "Retry-After" in problem.headers:
        reply["retry_after"] = int(problem.headers["Retry-After"])
    return reply


class Connection:
    """One WebSocket: a reader loop that starts a task per operation, and one lock for writing."""

    def __init__(self, ws: WebSocket, state: AppState, operations: set[str]) -> None:
        self.ws = ws
        self.state = state
        self.operations = operations
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._write = asyncio.Lock()
        self.caller_key = ""  # whom the in-flight cap per user counts (set once accepted)

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON reply (never two at once); a closed socket is ignored."""
        if self.ws.client_state != WebSocketState.CONNECTED:
            return
        async with self._write:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await self.ws.send_text(json.dumps(message, default=str))

    async def serve(self) -> None:
        """Read messages until the client goes; cancel whatever it left running."""
        await self.ws.accept()
        try:
            self.caller_key = await ratelimit.caller_key(self.ws)
            while True:
                raw = await self.ws.receive_text()
                reply = self._dispatch(raw)
                if reply is not None:
                    # Awaited, not a task per reply: a client that floods without reading is not read on.
                    await self.send(reply)
        except WebSocketDisconnect:
            pass
        finally:
            for task in self.tasks.values():
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    def _dispatch(self, raw: str) -> dict[str, Any] | None:
        """Start the message's operation; the reply due at once (an error, a cancel's answer), if any."""
        request_id: str | None = None
        try:
            if len(raw) > MAX_MESSAGE_CHARS:
                raise PayloadTooLarge(f"Message over {MAX_MESSAGE_CHARS} characters")
            try:
                message = json.loads(raw)
            except ValueError:
                raise Unprocessable("Message is not valid JSON") from None
            except RecursionError:
                raise Unprocessable("Message is nested too deeply") from None
            if not isinstance(message, dict):
                raise Unprocessable("Message must be a JSON object naming one operation")
            rid = message.pop("request_id", None)
            if rid is not None and not isinstance(rid, str | int):
                raise Unprocessable("request_id must be a string or a number")
            if rid is not None and len(str(rid)) > MAX_REQUEST_ID_CHARS:  # every reply echoes it
                raise Unprocessable(f"request_id must have at most {MAX_REQUEST_ID_CHARS} characters")
            request_id = None if rid is None else str(rid)
            if len(message) != 1:
                raise Unprocessable(
                    f"Message must name exactly one operation of: {', '.join(sorted(self.operations))}"
                )
            ((operation, body),) = message.items()
            if operation not in self.operations:
                raise Unprocessable(
                    f"Unknown operation {operation!r} on this socket; use one of: {', '.join(sorted(self.operations))}"
                )
            if operation == "cancel":
                return self._cancel(request_id, body)
            if request_id is not None and request_id in self.tasks:
                raise Conflict(f"request_id {request_id} is already in flight")
            self._admit()
            key = request_id if request_id is not None else f"_anon-{uuid.uuid4().hex}"
            task = asyncio.create_task(self._run(operation, body, request_id))
            self.tasks[key] = task
            in_flight = self.state.ws_operations
            in_flight[self.caller_key] = in_flight.get(self.caller_key, 0) + 1
            task.add_done_callback(functools.partial(self._forget, key))
        except DomainError as problem:
            return error_frame(request_id, problem)
        return None

    def _admit(self) -> None:
        """Refuse one operation more than the socket's or the caller's cap (429; the socket stays open)."""
        settings = self.state.settings
        per_socket, per_user = settings.ws_max_inflight_per_socket, settings.ws_max_inflight_per_user
        if len(self.tasks) >= per_socket:
            where = f"on this socket (at most {per_socket})"
        elif self.state.ws_operations.get(self.caller_key, 0) >= per_user:
            where = f"for this user (at most {per_user} on this server)"
        else:
            return
        raise RateLimited(
            f"Too many operations in flight {where}: wait for a reply or cancel one",
            headers={"Retry-After": "1"},
        )

    def _cancel(self, request_id: str | None, body: Any) -> dict[str, Any]:
        try:
            target = Cancel.model_validate(
                body if isinstance(body, dict) else {"request_id": body}
            ).request_id
        except ValidationError as exc:
            raise InvalidInput(exc.errors()) from None
        task = self.tasks.get(str(target))
        if task is None:
            raise NotFound(f"No operation with request_id {target} is in flight")
        task.cancel()
        return {"request_id": request_id, "cancel_response": {"request_id": str(target), "cancelled": True}}

    async def _run(self, operation: str, body: Any, request_id: str | None) -> None:
        try:
            await ratelimit.enforce(self.ws)  # each operation counts like a request (429 on this socket)
            result = await HANDLERS[operation](self, body, request_id)
            await self.send({"request_id": request_id, f"{operation}_response": result})
        except asyncio.CancelledError:
            await self.send({"request_id": request_id, "cancelled": True})
            raise
        except ValidationError as exc:  # the operation's body does not match its schema
            await self.send(error_frame(request_id, InvalidInput(exc.errors())))
        except Exception as exc:  # noqa: BLE001 - one failed operation must not take the socket down
            # The same answers as over HTTP: 4xx, 503 with retry_after on an outage, 500 for a bug.
            await self.send(error_frame(request_id, answer_of(exc, f"WEBSOCKET operation {operation}")))

    def _forget(self, key: str, _task: asyncio.Task[Any]) -> None:
        """A finished operation leaves the socket's in-flight table and its caller's count."""
        self.tasks.pop(key, None)
        left = self.state.ws_operations.get(self.caller_key, 0) - 1
        if left > 0:
            self.state.ws_operations[self.caller_key] = left
        else:
            self.state.ws_operations.pop(self.caller_key, None)

    async def caller(self, db: Any, need_project: bool) -> tuple[Any, Any, Any]:
        """(user, session, project) of this socket's cookies or headers, checked now by the HTTP routes' chain."""
        return await identify(credentials_of(self.ws), self.state, db, need_project=need_project)


Handler = Callable[[Connection, Any, "str | None"], Awaitable[Any]]


async def _completion_request(conn: Connection, body: Any, request_id: str | None) -> Any:
    request = CompletionRequest.model_validate(body)
    caller = await completion_caller(credentials_of(conn.ws), conn.state)
    user, session, project = caller, caller.session, caller.project

    async def partial(meta_query_id: uuid.UUID, model: ModelInfo, slot: Any) -> None:
        await conn.send(
            {
                "request_id": request_id,
                "completion_partial": {"meta_query_id": str(meta_query_id), "completion": slot.model_dump()},
            }
        )

    answer = await completions.request_completion(
        conn.state, user, session, project, request, on_result=partial
    )
    return completion_routes.generated(answer.data).model_dump(mode="json")


async def _completion_feedback(conn: Connection, body: Any, request_id: str | None) -> Any:
    request = FeedbackRequest.model_validate(body)
    async with conn.state.sessionmaker() as db:
        user, _s, _p = await conn.caller(db, need_project=False)
        await completions.feedback(conn.state, db, user, request)
    return completion_routes.recorded(request).model_dump(mode="json")


async def _chat_request(conn: Connection, body: Any, request_id: str | None) -> Any:
    request = ChatRequest.model_validate(body)

    async def token(model: ModelInfo, piece: str) -> None:
        await conn.send(
            {
                "request_id": request_id,
                "chat_token": {"model_id": model.model_id, "model_name": model.name, "text": piece},
            }
        )

    async with conn.state.sessionmaker() as db:
        user, session, project = await conn.caller(db, need_project=True)
        response = await chats.request_chat(conn.state, db, user, session, project, request, on_piece=token)
    return response.model_dump(mode="json")


async def _chat_get(conn: Connection, body: Any, request_id: str | None) -> Any:
    request = ChatGet.model_validate(body if isinstance(body, dict) else {"page_number": body})
    async with conn.state.sessionmaker() as db:
        user, _s, project = await conn.caller(db, need_project=True)
        page = await chats.history_page(conn.state, db, user, project, request.page_number)
    return page.model_dump(mode="json")


async def _chat_delete(conn: Connection, body: Any, request_id: str | None) -> Any:
    request = ChatDelete.model_validate(body)
    async with conn.state.sessionmaker() as db:
        user, _s, _p = await conn.caller(db, need_project=False)
        removed = await chats.delete_chat(conn.state, db, user, request.chat_id)
    return chat_routes.deleted(request.chat_id, removed).model_dump(mode="json")


async def _context_update(conn: Connection, body: Any, request_id: str | None) -> Any:
    request = MultiFileContextUpdate.model_validate(body)
    async with conn.state.sessionmaker() as db:
        _u, _s, project = await conn.caller(db, need_project=True)
        files = await update_context(conn.state, db, project, request)
    return context_routes.updated(files).model_dump(mode="json")


HANDLERS: dict[str, Handler] = {
    "multi_file_context_update": _context_update,
    "completion_request": _completion_request,
    "completion_feedback": _completion_feedback,
    "chat_request": _chat_request,
    "chat_get": _chat_get,
    "chat_delete": _chat_delete,
}
COMPLETION_OPS = {"completion_request", "completion_feedback", "cancel"}
CONTEXT_OPS = {"multi_file_context_update", "cancel"}
CHAT_OPS = {"chat_request", "chat_get", "chat_delete", "cancel"}


@router.websocket("/completion")
async def completion_socket(ws: WebSocket) -> None:
    """Completion requests and feedback; per-model results as each model finishes."""
    await Connection(ws, ws.app.state.c4m, COMPLETION_OPS).serve()


@router.websocket("/completion/multi-file-context")
async def context_socket(ws: WebSocket) -> None:
    """Multi-file context updates; each answers the redacted lines per file."""
    await Connection(ws, ws.app.state.c4m, CONTEXT_OPS).serve()


@router.websocket("/chat")
async def chat_socket(ws: WebSocket) -> None:
    """Chat requests with streamed tokens, history pages and deletion."""
    await Connection(ws, ws.app.state.c4m, CHAT_OPS).serve()
