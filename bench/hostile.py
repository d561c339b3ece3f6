"""Load and fault: the attacks of the hardening issue, repeated against the real stack, bounded and local.

A benign client (two plugin users, each sending `GET /api/ping` and `GET /api/project/list` in turn every
PACE_S seconds) measures the ingress's latency alone, then next to each hostile client in turn, then next
to all of them at once:

* `redaction`: 100 KB of adversarial code (tests/utils/adversarial_code.py, the generator that used to be
  super-linear) as a multi-file-context update, four in flight, back to back;
* `ws-flood`: one WebSocket with hundreds of operations in flight at once, again and again (the Redis pool
  and the in-flight caps);
* `stalled-exports`: sixteen data exports of a user with megabytes of stored context whose sockets read the
  headers and then nothing (a small receive buffer, so the server's writes block at once);
* `all`: the three together.

Reported: the benign p50/p99 and the p99's ratio to the baseline of the same run (goal: at most 2x), and
every answer by status, the hostile ones included: 5xx are never allowed (0 x 500), 429/503 with
Retry-After are the platform's refusals. Then the worst redaction time per 8 KB over the adversarial
generators (bench/redaction.py measures it; goal at most 5 ms) and the live-context memory one user can take
within the per-user quota.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import websockets

from app.redaction import Redactor
from bench.redaction import GOAL_ADVERSARIAL_MS, adversarial_table
from bench.report import Result, Table, percentile
from bench.stack import Stack, completion_body, plugin_login_async
from tests.utils.adversarial_code import GENERATORS

PACE_S = 0.025
P99_GOAL = 2.0
HOSTILE_FILE_CHARS = 100_000
EXPORT_SOCKETS = 16
EXPORT_STORED_CHARS = 4_000_000  # stored context of the export user (about that much JSON to stream)
FLOOD_OPS = 300
SCENARIOS = ("redaction", "ws-flood", "stalled-exports")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of this benchmark."""
    g = p.add_argument_group("hostile")
    g.add_argument("--hostile-seconds", type=float, default=12.0, help="measured seconds per scenario")


@dataclass
class Tally:
    """Latencies of the benign client and the status of every answer, per side."""

    benign_ms: list[float] = field(default_factory=list)
    benign: Counter[int] = field(default_factory=Counter)
    hostile: Counter[int] = field(default_factory=Counter)

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in (self.benign + self.hostile).items() if s >= 500 and s != 503)


def _cookies(client: httpx.AsyncClient) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}


async def _user(base: str) -> tuple[httpx.AsyncClient, int]:
    client = httpx.AsyncClient(base_url=base, timeout=120)
    return client, await plugin_login_async(client)


# ------------------------------------------------------------------ the benign client


async def _benign(client: httpx.AsyncClient, stop: asyncio.Event, tally: Tally) -> None:
    paths = ("/api/ping", "/api/project/list")
    i = 0
    while not stop.is_set():
        began = time.perf_counter()
        try:
            r = await client.get(paths[i % 2], timeout=60)
            tally.benign[r.status_code] += 1
        except httpx.HTTPError:
            tally.benign[0] += 1  # no answer at all counts as a failure too
        tally.benign_ms.append((time.perf_counter() - began) * 1000)
        i += 1
        await asyncio.sleep(max(0.0, PACE_S - (time.perf_counter() - began)))


# ------------------------------------------------------------------ hostile clients


async def _redaction(client: httpx.AsyncClient, stop: asyncio.Event, tally: Tally) -> None:
    """Adversarial 100 KB files replacing themselves, four requests in flight."""
    lines = GENERATORS["quoted_hex_lines"](HOSTILE_FILE_CHARS, 1).split("\n")

    async def one(worker: int) -> None:
        path, held = f"src/hostile_{worker}.py", 0
        while not stop.is_set():
            change = {"change_type": "update", "start_line": 0, "end_line": held, "new_lines": lines}
            try:
                r = await client.post(
                    "/api/completion/multi-file-context/update", json={"context_updates": {path: [change]}}
                )
                tally.hostile[r.status_code] += 1
                if r.status_code == 200:
                    held = len(r.json()["data"][path])
                elif r.status_code in (429, 503):
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
            except httpx.HTTPError:
                tally.hostile[0] += 1

    await asyncio.gather(*(one(w) for w in range(4)))


async def _ws_flood(base: str, client: httpx.AsyncClient, stop: asyncio.Event, tally: Tally) -> None:
    """Hundreds of context updates sent at once on one socket, then their answers, again and again."""
    url = base.replace("http://", "ws://") + "/api/ws/completion/multi-file-context"
    change = {"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": ["x = 1"]}
    n = 0
    while not stop.is_set():
        try:
            async with websockets.connect(url, additional_headers=_cookies(client), max_size=None) as ws:
                while not stop.is_set():
                    ids = {str(n + k) for k in range(FLOOD_OPS)}
                    for rid in ids:
                        body = {"context_updates": {f"flood/{int(rid) % 50}.py": [change]}}
                        await ws.send(json.dumps({"request_id": rid, "multi_file_context_update": body}))
                    n += FLOOD_OPS
                    while ids:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
                        if frame.get("request_id") in ids:
                            ids.discard(frame["request_id"])
                            tally.hostile[int(frame.get("status", 200)) if "error" in frame else 200] += 1
        except (OSError, TimeoutError, websockets.WebSocketException):
            tally.hostile[0] += 1  # the socket was closed on the flooder: counted, then reopened
            await asyncio.sleep(0.5)


async def _prepare_export_user(base: str) -> httpx.AsyncClient:
    """A user with megabytes of stored context (completion requests with large prefixes)."""
    client, model_id = await _user(base)
    prefix = "\n".join(f"value_{i} = compute({i}, 'item {i}')" for i in range(4000))
    stored = 0
    while stored < EXPORT_STORED_CHARS:
        body = completion_body(model_id, prefix + "\nresult = ", "", "src/big.py")
        r = await client.post("/api/completion/request", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"preparing the export user: completion answered {r.status_code}")
        stored += len(prefix)
    await asyncio.sleep(3)  # the telemetry writer's flush
    return client


async def _stalled_exports(base: str, client: httpx.AsyncClient, stop: asyncio.Event, tally: Tally) -> None:
    """Export requests whose readers take the headers and then never read again."""
    url = urlsplit(base)
    request = (
        f"GET /api/user/export HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Cookie: {_cookies(client)['Cookie']}\r\nConnection: close\r\n\r\n"
    ).encode()
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(EXPORT_SOCKETS):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (url.hostname or "127.0.0.1", url.port or 80))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.read(1024), 60)
            status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
            tally.hostile[status] += 1
            writers.append(writer)
        await stop.wait()  # ... and never read the body
    finally:
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# ------------------------------------------------------------------ memory per user under the quota


async def _fill_live_context(base: str, projects: int) -> dict[int, int]:
    """One new user writes ~175 KB files into `projects` projects until the platform refuses; answers by status."""
    client, _ = await _user(base)
    lines = [f"value_{i} = compute({i}, 'item {i}')  # {'x' * 20}" for i in range(2800)]
    statuses: Counter[int] = Counter()
    try:
        for p in range(projects):
            if p:
                r = await client.post("/api/project/create", json={"project_name": f"fill {p}"})
                if r.status_code != 201:
                    raise RuntimeError(f"project create answered {r.status_code}")
            n = 0
            while True:
                change = {"change_type": "insert", "start_line": 0, "end_line": 0, "new_lines": lines}
                r = await client.post(
                    "/api/completion/multi-file-context/update",
                    json={"context_updates": {f"f{n}.py": [change]}},
                )
                statuses[r.status_code] += 1
                n += 1
                if r.status_code != 200:
                    break
    finally:
        await client.aclose()
    return dict(statuses)


async def _memory_per_user(stack: Stack, users: int = 2, projects: int = 3) -> dict[str, Any]:
    from redis.asyncio import Redis

    redis = Redis.from_url(stack.redis_url)
    try:
        before = int((await redis.info("memory"))["used_memory"])
        answers = [await _fill_live_context(stack.base_url, projects) for _ in range(users)]
        after = int((await redis.info("memory"))["used_memory"])
    finally:
        await redis.aclose()
    quota = int(stack.settings().context_user_quota_bytes)
    return {
        "users": users,
        "projects_each": projects,
        "quota_bytes": quota,
        "growth_per_user_bytes": (after - before) / users,
        "answers": answers,
    }


# ------------------------------------------------------------------ one measured window


async def _window(
    base: str,
    benign: list[httpx.AsyncClient],
    hostile: dict[str, httpx.AsyncClient],
    which: tuple[str, ...],
    seconds: float,
) -> Tally:
    tally = Tally()
    stop = asyncio.Event()
    attacks = []
    if "redaction" in which:
        attacks.append(_redaction(hostile["redaction"], stop, tally))
    if "ws-flood" in which:
        attacks.append(_ws_flood(base, hostile["ws-flood"], stop, tally))
    if "stalled-exports" in which:
        attacks.append(_stalled_exports(base, hostile["stalled-exports"], stop, tally))
    attack_tasks = [asyncio.create_task(a) for a in attacks]
    await asyncio.sleep(1.0 if attacks else 0.0)  # the attack is under way before the benign client starts
    benign_tasks = [asyncio.create_task(_benign(c, stop, tally)) for c in benign]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*benign_tasks)
    for task in attack_tasks:
        try:
            await asyncio.wait_for(task, 90)
        except TimeoutError:
            task.cancel()
    return tally


async def _run(stack: Stack, args: argparse.Namespace) -> Result:
    base = stack.base_url
    benign = [(await _user(base))[0] for _ in range(2)]
    hostile = {"redaction": (await _user(base))[0], "ws-flood": (await _user(base))[0]}
    hostile["stalled-exports"] = await _prepare_export_user(base)
    clients = [*benign, *hostile.values()]
    res = Result("hostile")
    t = Table(
        f"Benign client (2 users, ping + project list every {PACE_S * 1000:.0f} ms) next to hostile clients",
        [
            "scenario",
            "benign n",
            "p50 ms",
            "p99 ms",
            "p99 / baseline",
            "benign non-2xx",
            "hostile answers",
            "5xx",
        ],
    )
    windows_data: dict[str, Any] = {}
    try:
        await _window(base, benign, hostile, (), 3.0)  # warm-up
        windows: list[tuple[str, tuple[str, ...]]] = [
            ("baseline", ()),
            *((s, (s,)) for s in SCENARIOS),
            ("all", SCENARIOS),
        ]
        baseline_p99 = float("nan")
        for name, which in windows:
            tally = await _window(base, benign, hostile, which, args.hostile_seconds)
            p50, p99 = percentile(tally.benign_ms, 50), percentile(tally.benign_ms, 99)
            if name == "baseline":
                baseline_p99 = p99
            ratio = p99 / baseline_p99
            non_2xx = sum(n for s, n in tally.benign.items() if not 200 <= s < 300)
            answers = ", ".join(f"{s}x{n}" for s, n in sorted(tally.hostile.items())) or "-"
            t.add(
                name,
                len(tally.benign_ms),
                round(p50, 1),
                round(p99, 1),
                round(ratio, 2),
                non_2xx,
                answers,
                tally.server_errors,
            )
            windows_data[name] = {
                "benign_n": len(tally.benign_ms),
                "p50_ms": p50,
                "p99_ms": p99,
                "p99_ratio": ratio,
                "benign": dict(tally.benign),
                "hostile": dict(tally.hostile),
                "server_errors": tally.server_errors,
            }
            print(t.render(), flush=True)
    finally:
        for client in clients:
            await client.aclose()
    # Adversarial redaction inputs, in this process (bench/redaction.py's table: the same measurement).
    plain = (Path(asyncio.__file__).parent / "base_events.py").read_text()
    adversarial, adversarial_data = adversarial_table(Redactor(cache_entries=0), plain, repeats=3)
    res.tables.append(adversarial)
    worst = adversarial_data["worst_ms_per_8kb"]
    mem = await _memory_per_user(stack)
    data = {"windows": windows_data, "memory": mem, "adversarial_redaction": adversarial_data}
    refused = all(a.get(413, 0) >= 1 for a in mem["answers"])
    m = Table(
        "Live multi-file context one user can hold (files of ~175 KB into 3 projects until refused)",
        ["users", "quota MiB", "Redis growth per user MiB", "growth / quota", "answers per user"],
    )
    m.add(
        mem["users"],
        round(mem["quota_bytes"] / 2**20, 1),
        round(mem["growth_per_user_bytes"] / 2**20, 1),
        round(mem["growth_per_user_bytes"] / mem["quota_bytes"], 2),
        "; ".join(", ".join(f"{s}x{n}" for s, n in sorted(a.items())) for a in mem["answers"]),
    )
    m.notes.append("Redis used_memory (INFO memory) before and after, divided by the users")
    res.tables.append(m)
    res.checks["every user refused (413) at the quota"] = refused
    res.goals[f"adversarial redaction worst <= {GOAL_ADVERSARIAL_MS:g} ms per 8 KB"] = (
        worst <= GOAL_ADVERSARIAL_MS
    )
    res.goals["Redis growth per user within 1.5x the quota"] = (
        mem["growth_per_user_bytes"] <= 1.5 * mem["quota_bytes"]
    )
    t.notes += [
        (
            "hostile answers: status x count (0: no answer / connection closed); 429 and 503 are refusals "
            "with Retry-After, 5xx other than 503 are failures"
        ),
        "one ingress replica; the benign and hostile clients run in this process, on the same machine",
        (
            "rate limits are the benchmarks' (bench/stack.py WORKER_ENV: out of the way), so the attacks run "
            "at full speed rather than at the limiter's pace"
        ),
    ]
    res.tables.append(t)
    res.data = data
    hostile_windows = [k for k in windows_data if k != "baseline"]
    res.checks["0 x 500 (every answer, benign and hostile)"] = all(
        v["server_errors"] == 0 for v in windows_data.values()
    )
    res.checks["benign client always answered 2xx"] = all(
        all(200 <= int(s) < 300 for s in v["benign"]) for v in windows_data.values()
    )
    res.goals[f"benign p99 within {P99_GOAL:g}x of baseline"] = all(
        windows_data[k]["p99_ratio"] <= P99_GOAL for k in hostile_windows
    )
    return res


def run(stack: Stack, args: argparse.Namespace) -> Result:
    """Deploy the default config and repeat the attacks."""
    stack.deploy(stack.model_entry())
    return asyncio.run(_run(stack, args))
