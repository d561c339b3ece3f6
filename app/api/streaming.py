"""Streamed answers with deadlines: a client that stops reading is cut off instead of being waited for."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Message, Send

log = logging.getLogger(__name__)


class _ReaderTooSlow(Exception):
    """The client did not take a piece of the answer in time."""


class BoundedStreamingResponse(StreamingResponse):
    """A StreamingResponse whose every piece must be taken within `send_timeout_s` and the whole answer
    within `max_duration_s`; past either, the answer stops and the server closes the connection (the client
    sees a truncated body). Without it a reader that never reads keeps the stream, its task and whatever
    the stream holds, for as long as it likes.
    """

    def __init__(self, content: Any, *, send_timeout_s: float, max_duration_s: float, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.send_timeout_s = send_timeout_s
        self.max_duration_s = max_duration_s

    async def stream_response(self, send: Send) -> None:
        """Stream the body under the deadlines; a reader too slow for them is cut off (logged, no data)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_duration_s

        async def bounded_send(message: Message) -> None:
            left = min(self.send_timeout_s, deadline - loop.time())
            if left <= 0:
                raise _ReaderTooSlow("total")
            try:
                async with asyncio.timeout(left):
                    await send(message)
            except TimeoutError:
                raise _ReaderTooSlow("total" if deadline <= loop.time() else "send") from None

        try:
            await super().stream_response(bounded_send)
        except _ReaderTooSlow as exc:
            limit = self.max_duration_s if exc.args[0] == "total" else self.send_timeout_s
            log.warning(
                "streamed answer cut off: the client was too slow (%s limit %.0f s)", exc.args[0], limit
            )
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()  # the producer's cleanup runs now, not whenever it is garbage-collected
