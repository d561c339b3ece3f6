"""Request size limits as pure ASGI middleware: bodies over `max_body_bytes` never reach the app.

`Content-Length` alone is not enough: a chunked body has none, and a client can send more than it
declared. The body is therefore read here, counted as it streams in, and replayed to the app only
when it is complete and within the limit (FastAPI reads whole bodies anyway, so nothing is lost).
WebSocket messages over the same limit close the socket with 1009 (message too big).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import BadRequest, PayloadTooLarge, send_error
from app.infra.state import AppState

WS_MESSAGE_TOO_BIG = 1009


def _declared_length(scope: Scope) -> int | None:
    """The Content-Length header as a number; -1 when it is present but not a non-negative integer."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else -1
    return None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is over the limit of {limit} bytes")


class BodyLimitMiddleware:
    """413 for request bodies over the limit (declared or streamed); 1009 for oversized WebSocket messages."""

    def __init__(self, app: ASGIApp, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes  # None: settings.max_body_bytes of the running app

    def _limit(self, scope: Scope) -> int | None:
        if self.max_bytes is not None:
            return self.max_bytes
        state: AppState | None = getattr(scope["app"].state, "c4m", None) if "app" in scope else None
        return state.settings.max_body_bytes if state is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the body (HTTP) or wrap receive (WebSocket); other scopes pass through."""
        limit = self._limit(scope) if scope["type"] in ("http", "websocket") else None
        if limit is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send, limit)
        else:
            await self.app(scope, self._websocket_receive(receive, send, limit), send)

    async def _http(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        declared = _declared_length(scope)
        if declared == -1:
            await send_error(send, BadRequest("Invalid Content-Length header"), scope["path"])
            return
        if declared is not None and declared > limit:
            await send_error(send, _too_large(limit), scope["path"])
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before the body was complete: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_error(send, _too_large(limit), scope["path"])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    @staticmethod
    def _websocket_receive(receive: Receive, send: Send, limit: int) -> Receive:
        async def checked() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("bytes") or message.get("text") or b""
                size = len(data.encode() if isinstance(data, str) else data)
                if size > limit:
                    await send(
                        {"type": "websocket.close", "code": WS_MESSAGE_TOO_BIG, "reason": "Message too big"}
                    )
                    return {"type": "websocket.disconnect", "code": WS_MESSAGE_TOO_BIG}
            return message

        return checked


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the buffered body once, then the real stream (for disconnect detection)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
