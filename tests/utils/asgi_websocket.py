"""A WebSocket client that talks ASGI to an app in this process (no server, same event loop as the test)."""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any, Self

from starlette.types import ASGIApp, Message


class AsgiWebSocket:
    """`async with AsgiWebSocket(app, path, headers) as ws`: send JSON, receive JSON, disconnect on exit."""

    def __init__(self, app: ASGIApp, path: str, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.path = path
        self.headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "http_version": "1.1",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test"), *self.headers],
            "client": ("127.0.0.1", 50000),
            "server": ("test", 80),
            "subprotocols": [],
        }
        self._task = asyncio.create_task(self.app(scope, self._to_app.get, self._from_app.put))
        await self._to_app.put({"type": "websocket.connect"})
        message = await self._next()
        assert message["type"] == "websocket.accept", message
        return self

    async def _next(self, timeout: float = 10.0) -> Message:
        return await asyncio.wait_for(self._from_app.get(), timeout)

    async def send(self, message: dict[str, Any]) -> None:
        """Send one JSON text frame."""
        await self._to_app.put({"type": "websocket.receive", "text": json.dumps(message)})

    async def send_text(self, text: str) -> None:
        """Send one text frame as it is (malformed messages)."""
        await self._to_app.put({"type": "websocket.receive", "text": text})

    async def receive(self) -> dict[str, Any]:
        """The next JSON text frame the app sent."""
        message = await self._next()
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self._to_app.put({"type": "websocket.disconnect", "code": 1000})
        assert self._task is not None
        await asyncio.wait_for(self._task, 10.0)
