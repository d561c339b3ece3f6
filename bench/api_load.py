"""API load: latency and throughput of completion/request over REST and over the WebSocket with 1, 8 and 32
concurrent clients against the default model, and how many idle WebSocket connections one ingress replica
holds (with the memory of the ingress replica and of Serve's proxy before and after).

Each client is its own plugin user (own cookie jar, session and project) sending one request after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import websockets

from bench.prompts import load_prompts
from bench.report import Result, Table, percentile
from bench.stack import Stack, completion_body, plugin_login_async

IDLE_GOAL = 1000


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this benchmark."""
    g = p.add_argument_group("api_load")
    g.add_argument("--load-clients", default="1,8,32", help="concurrency levels (default 1,8,32)")
    g.add_argument("--load-seconds", type=float, default=20.0, help="measured seconds per level and path")
    g.add_argument("--idle-sockets", type=int, default=IDLE_GOAL, help="idle WebSocket connections to open")


async def _login(base: str) -> tuple[httpx.AsyncClient, int]:
    client = httpx.AsyncClient(base_url=base, timeout=120)
    return client, await plugin_login_async(client)


def _cookies(client: httpx.AsyncClient) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}


async def _rest_client(
    client: httpx.AsyncClient,
    bodies: list[dict[str, Any]],
    stop_at: float,
    out: list[float],
    errors: list[str],
) -> None:
    i = 0
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        r = await client.post("/api/completion/request", json=bodies[i % len(bodies)])
        if r.status_code == 200:
            out.append((time.perf_counter() - t0) * 1000)
        else:
            errors.append(str(r.status_code))
        i += 1


async def _ws_client(
    ws_url: str,
    client: httpx.AsyncClient,
    bodies: list[dict[str, Any]],
    stop_at: float,
    out: list[float],
    errors: list[str],
) -> None:
    async with websockets.connect(ws_url, additional_headers=_cookies(client), max_size=None) as ws:
        i = 0
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await ws.send(json.dumps({"request_id": str(i), "completion_request": bodies[i % len(bodies)]}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("request_id") != str(i):
                    continue
                if "completion_request_response" in msg:
                    out.append((time.perf_counter() - t0) * 1000)
                    break
                if "error" in msg:
                    errors.append(str(msg.get("status")))
                    break
            i += 1


async def _level(
    stack: Stack, path: str, clients: list[tuple[httpx.AsyncClient, int]], prompts: list[Any], seconds: float
) -> dict[str, Any]:
    lat: list[float] = []
    errors: list[str] = []
    ws_url = stack.base_url.replace("http://", "ws://") + "/api/ws/completion"
    began = time.perf_counter()
    stop_at = began + seconds
    tasks = []
    for n, (client, model_id) in enumerate(clients):
        bodies = [
            completion_body(model_id, p.prefix, p.suffix, p.module)
            for p in prompts[n % len(prompts) :] + prompts[: n % len(prompts)]
        ]
        if path == "rest":
            tasks.append(_rest_client(client, bodies, stop_at, lat, errors))
        else:
            tasks.append(_ws_client(ws_url, client, bodies, stop_at, lat, errors))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    return {
        "n": len(lat),
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "per_s": len(lat) / elapsed,
        "errors": len(errors),
    }


def _rss_mb(name_part: str) -> float:
    """Resident memory (MB) of the Ray worker processes whose title contains name_part (e.g. `ray::ProxyActor`)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info.get("cmdline") or [])
        if title.startswith("ray::") and name_part in title:
            try:
                total += proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
    return total


async def _idle_sockets(stack: Stack, client: httpx.AsyncClient, n: int) -> dict[str, Any]:
    ws_url = stack.base_url.replace("http://", "ws://") + "/api/ws/completion"
    before = {"ingress": _rss_mb(":ingress"), "proxy": _rss_mb("ProxyActor")}
    sockets = []
    failed = 0
    began = time.perf_counter()
    for _ in range(n):
        try:
            sockets.append(
                await websockets.connect(ws_url, additional_headers=_cookies(client), open_timeout=30)
            )
        except Exception:  # noqa: BLE001 - count what could not connect
            failed += 1
    opened_s = time.perf_counter() - began
    await asyncio.sleep(3)
    after = {"ingress": _rss_mb(":ingress"), "proxy": _rss_mb("ProxyActor")}
    # Every socket is still served: a cheap bad message on each gets its error answer.
    alive = 0
    for ws in sockets:
        with contextlib.suppress(Exception):  # a dead socket simply does not count
            await ws.send("{}")
            msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
            alive += "error" in msg
    for ws in sockets:
        await ws.close()
    return {
        "opened": len(sockets),
        "failed": failed,
        "alive": alive,
        "open_s": opened_s,
        "before": before,
        "after": after,
    }


async def _run(stack: Stack, args: argparse.Namespace) -> Result:
    levels = [int(x) for x in args.load_clients.split(",")]
    prompts = load_prompts()
    clients = [await _login(stack.base_url) for _ in range(max(levels))]
    res = Result("api_load")
    t = Table(
        "completion/request against the default model (each client: one plugin user, requests back to back)",
        ["path", "clients", "requests", "p50 ms", "p99 ms", "completions/s", "errors"],
    )
    data: dict[str, Any] = {}
    try:
        await _level(stack, "rest", clients[:1], prompts, 3.0)  # warm-up
        for level in levels:
            for path in ("rest", "websocket"):
                r = await _level(stack, path, clients[:level], prompts, args.load_seconds)
                data[f"{path}-{level}"] = r
                t.add(
                    path,
                    level,
                    r["n"],
                    round(r["p50"], 1),
                    round(r["p99"], 1),
                    round(r["per_s"], 2),
                    r["errors"],
                )
        print(t.render(), flush=True)  # the load figures, even if the idle-socket part fails
        idle = await _idle_sockets(stack, clients[0][0], args.idle_sockets)
    finally:
        for client, _ in clients:
            await client.aclose()
    data["idle"] = idle
    it = Table(
        "Idle WebSocket connections on one ingress replica",
        [
            "opened",
            "failed",
            "still answering",
            "open s",
            "ingress MB before",
            "after",
            "proxy MB before",
            "after",
        ],
    )
    it.add(
        idle["opened"],
        idle["failed"],
        idle["alive"],
        round(idle["open_s"], 1),
        round(idle["before"]["ingress"], 1),
        round(idle["after"]["ingress"], 1),
        round(idle["before"]["proxy"], 1),
        round(idle["after"]["proxy"], 1),
    )
    it.notes.append(
        "memory: resident set of the ingress replica's and Serve proxy's worker processes (psutil)"
    )
    res.tables += [t, it]
    res.data = data
    res.checks["no failed requests"] = all(v["errors"] == 0 for k, v in data.items() if k != "idle")
    res.goals[f"{IDLE_GOAL} idle sockets held"] = idle["alive"] >= IDLE_GOAL
    return res


def run(stack: Stack, args: argparse.Namespace) -> Result:
    """Deploy the default config and measure."""
    stack.deploy(stack.model_entry())
    return asyncio.run(_run(stack, args))
