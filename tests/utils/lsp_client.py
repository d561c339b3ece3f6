"""A small Language Server Protocol client over a subprocess's stdio (JSON-RPC 2.0, Content-Length framing)."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class LspClient:
    """Requests, notifications and the server's own messages (notifications, requests it makes of us)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.notifications: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def request(self, method: str, params: Any, timeout: float = 30.0) -> Any:
        """Send a request and wait for its result (an error answer raises RuntimeError)."""
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self._send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        return await asyncio.wait_for(future, timeout)

    async def notify(self, method: str, params: Any) -> None:
        """Send a notification."""
        await self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        self._stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        await self._stdin.drain()

    async def _read(self) -> None:
        while True:
            length = 0
            while True:
                line = await self._stdout.readline()
                if not line:
                    return  # the server exited
                if line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            message = json.loads(await self._stdout.readexactly(length))
            if "id" in message and "method" not in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(RuntimeError(message["error"]))
                    else:
                        future.set_result(message.get("result"))
            elif "id" in message:  # a request of the server (workspace/configuration, ...): answer null
                await self._send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            else:
                self.notifications.append(message)

    async def close(self) -> None:
        """shutdown + exit, then make sure the process is gone."""
        try:
            await self.request("shutdown", None, timeout=10)
            await self.notify("exit", None)
            await asyncio.wait_for(self.process.wait(), 10)
        except (TimeoutError, RuntimeError, ConnectionError):
            pass
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
            self._reader.cancel()
