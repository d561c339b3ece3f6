"""`Server-Timing: app;dur=…` on every HTTP response: the ingress's own time, from the request's arrival in
the app to the start of its response (routes may add their stages before it; see routers/completion.py).

Only durations are sent, never anything of the request.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def server_timing(timings: dict[str, float]) -> str:
    """A `Server-Timing` header value: `name;dur=ms` per stage (what a route reports before the app's time)."""
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings.items())


class ServerTimingMiddleware:
    """Pure ASGI: appends the app's time to the response's `server-timing` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time HTTP requests; other scopes pass through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                app_ms = (time.perf_counter() - began) * 1000
                headers = list(message.get("headers", []))
                entry = f"app;dur={app_ms:.2f}".encode()
                for i, (name, value) in enumerate(headers):
                    if name.lower() == b"server-timing":
                        headers[i] = (name, value + b", " + entry)
                        break
                else:
                    headers.append((b"server-timing", entry))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)
