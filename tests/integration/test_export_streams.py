"""Data exports read by clients that stop reading: no pool connection is held for them, and they are cut off.

A real uvicorn server on a loopback socket whose send buffer is small (accepted sockets inherit it), and
raw client sockets with small receive buffers that read the answer's headers and then nothing: the
server's writes block as they would for a stalled reader anywhere.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import insert

from app.infra.state import AppState
from db.tables import MetaQuery
from tests.utils.asgi_api import signed_in
from tests.utils.replicas import client_for, new_address, replica

SMALL_BUFFER = 4096
QUERIES = 1500  # an export of several hundred KB: far more than the socket buffers hold


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[tuple[str, int]]:
    """`app` behind uvicorn on 127.0.0.1, its connections with small send buffers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="critical"))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield listener.getsockname()
    finally:
        server.should_exit = True
        server.force_exit = True  # the stalled connections would keep a graceful shutdown waiting
        await task
        listener.close()


async def ask_for_export(address: tuple[str, int], cookies: httpx.Cookies) -> socket.socket:
    """A client that sends its export request (and reads nothing yet)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
    sock.setblocking(False)
    await loop.sock_connect(sock, address)
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    request = f"GET /api/user/export HTTP/1.1\r\nHost: test\r\nCookie: {cookie}\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    return sock


async def read_head(sock: socket.socket) -> bytes:
    """The answer's status line and headers, byte by byte: nothing of the body is read."""
    loop = asyncio.get_running_loop()
    head = b""
    while b"\r\n\r\n" not in head:
        piece = await loop.sock_recv(sock, 1)
        assert piece, head
        head += piece
    return head


async def read_to_end(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server still sends, until it closes the connection."""
    loop = asyncio.get_running_loop()
    data = b""
    while piece := await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout):
        data += piece
    return data


async def exporter_with_many_queries(app: FastAPI, state: AppState) -> httpx.AsyncClient:
    """A signed-in user with enough stored queries that the export outgrows every buffer."""
    c, _ = await signed_in(client_for(app, new_address()))
    user_id = uuid.UUID((await c.get("/api/user/get")).json()["user"]["user_id"])
    start = datetime.now(UTC) - timedelta(days=1)
    rows: list[dict[str, Any]] = [
        {
            "meta_query_id": uuid.uuid4(),
            "user_id": user_id,
            "query_type": "completion",
            "timestamp": start + timedelta(seconds=i),
        }
        for i in range(QUERIES)
    ]
    async with state.sessionmaker() as db:
        await db.execute(insert(MetaQuery), rows)
        await db.commit()
    return c


async def test_stalled_export_readers_hold_no_database_connection(services) -> None:
    async with replica(services, rate_limit_enabled=False) as (app, state), served(app) as address:
        exporter = await exporter_with_many_queries(app, state)
        bystander, _ = await signed_in(client_for(app, new_address()))
        pool: Any = state.engine.pool
        stalled = [
            await ask_for_export(address, exporter.cookies)
            for _ in range(pool.size() + pool._max_overflow + 1)
        ]
        try:
            await asyncio.sleep(
                1.0
            )  # every export has written what the buffers take and waits for its reader
            began = time.monotonic()
            try:
                status = (await asyncio.wait_for(bystander.get("/api/project/list"), 10)).status_code
            except TimeoutError:
                status = None
            took = time.monotonic() - began
            assert status == 200 and took < 2.0, (status, took)
            # They were all exports under way (answered 200), and their readers never read past the head.
            heads = await asyncio.wait_for(asyncio.gather(*(read_head(sock) for sock in stalled)), 10)
            assert all(head.startswith(b"HTTP/1.1 200") for head in heads)
        finally:
            for sock in stalled:
                sock.close()


async def test_a_stalled_reader_is_cut_off_and_a_reading_one_gets_it_all(services, caplog) -> None:
    async with (
        replica(services, rate_limit_enabled=False, export_send_timeout_s=1.0) as (app, state),
        served(app) as address,
    ):
        exporter = await exporter_with_many_queries(app, state)
        sock = await ask_for_export(address, exporter.cookies)
        try:
            assert (await asyncio.wait_for(read_head(sock), 10)).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(2.5)  # longer than the send timeout: the server gives up and closes
            rest = await read_to_end(sock, 5)  # what was buffered, then the end of the connection
        finally:
            sock.close()
        assert not rest.endswith(b"0\r\n\r\n"), "a stalled reader got the whole document"
        assert any("streamed answer cut off" in r.getMessage() for r in caplog.records)
        # A client that reads gets every query, in order, however many pages it takes.
        async with httpx.AsyncClient(base_url=f"http://{address[0]}:{address[1]}") as reader:
            cookie = "; ".join(f"{k}={v}" for k, v in exporter.cookies.items())
            r = await reader.get("/api/user/export", headers={"Cookie": cookie})
        assert r.status_code == 200
        stamps = [q["timestamp"] for q in json.loads(r.content)["queries"]]
        assert len(stamps) == QUERIES and stamps == sorted(stamps)
