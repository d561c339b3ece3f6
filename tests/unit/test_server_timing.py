"""The Server-Timing header: the app's own time appended to what a route reported."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI, Response

from app.api.server_timing import ServerTimingMiddleware, server_timing


def app() -> FastAPI:
    api = FastAPI()
    api.add_middleware(ServerTimingMiddleware)

    @api.get("/plain")
    async def plain() -> dict[str, str]:
        await asyncio.sleep(0.02)
        return {"ok": "yes"}

    @api.get("/staged")
    async def staged(response: Response) -> dict[str, str]:
        response.headers["server-timing"] = server_timing({"prepare": 1.234, "models": 10.0})
        return {"ok": "yes"}

    return api


def durations(header: str) -> dict[str, float]:
    out = {}
    for part in header.split(","):
        name, dur = part.strip().split(";dur=")
        out[name] = float(dur)
    return out


async def test_app_time_is_reported_and_covers_the_handler() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://t") as c:
        r = await c.get("/plain")
    assert r.json() == {"ok": "yes"}
    d = durations(r.headers["server-timing"])
    assert list(d) == ["app"] and d["app"] >= 20.0


async def test_route_stages_come_first_then_the_app_time() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://t") as c:
        r = await c.get("/staged")
    assert r.headers.get_list("server-timing") == [r.headers["server-timing"]]  # one header, not two
    d = durations(r.headers["server-timing"])
    assert list(d) == ["prepare", "models", "app"]
    assert d["prepare"] == 1.23 and d["models"] == 10.0 and d["app"] > 0
