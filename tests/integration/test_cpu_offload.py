"""CPU-heavy request work never holds the replica's event loop: a big redaction runs while /api/ping answers.

The app runs in-process on the real PostgreSQL and Redis, with the context limits of production (the
module's own app: the shared test app keeps them small). The context update carries adversarial code
(quoted hex tables, the input of issue 13's finding 1) large enough that redacting it takes a while
even in linear time; a ping sent meanwhile must answer at once and before the update does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.infra.cpu_pool import CpuPool
from app.infra.state import AppState
from app.redaction import Redactor
from serve.embedded import ServiceUrls
from tests.utils.adversarial_code import quoted_hex_lines
from tests.utils.asgi_api import api_settings, running_api, signed_in

FILES = 8
FILE_CHARS = 100_000
# A round may still wait for a garbage collection, the request's own JSON parsing (on the loop, in FastAPI)
# or, on a loaded machine, its share of the GIL; never for the redaction (87 s a round on the old code).
PING_WITHIN_S = 1.0


@pytest.fixture(scope="module")
async def big_api(services: ServiceUrls, data_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The app with production-sized context limits (200,000 characters a file, 2 MB a body)."""
    settings = api_settings(data_dir, max_context_chars=200_000)
    async with running_api(services.database_url, services.redis_url, settings) as (client, state):
        yield client, state


def _update(files: int, chars: int) -> dict[str, object]:
    return {
        "context_updates": {
            f"vectors_{i}.py": [
                {
                    "change_type": "insert",
                    "start_line": 0,
                    "end_line": 0,
                    "new_lines": quoted_hex_lines(chars, seed=i).split("\n"),
                }
            ]
            for i in range(files)
        }
    }


async def test_ping_answers_while_a_large_context_update_is_redacted(big_api, monkeypatch) -> None:
    client, _state = big_api
    c, _ = await signed_in(client)
    # Which threads redact: never the loop's (deterministic, whatever the machine's load).
    redacting_threads: set[int] = set()
    original = Redactor.redact_lines

    def recording(self: Redactor, *args: Any, **kwargs: Any) -> Any:
        redacting_threads.add(threading.get_ident())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Redactor, "redact_lines", recording)
    body = _update(FILES, FILE_CHARS)
    update = asyncio.create_task(c.post("/api/completion/multi-file-context/update", json=body))
    # Ping the same app every 10 ms for as long as the update takes. A round (a ping, then the pause)
    # measures the loop itself: while the loop is held, neither the ping nor the pause can end.
    began = time.perf_counter()
    latencies: list[float] = []
    while not update.done():
        asked = time.perf_counter()
        r = await c.get("/api/ping")
        assert r.status_code == 200
        await asyncio.sleep(0.01)
        latencies.append(time.perf_counter() - asked)
    took = time.perf_counter() - began
    done = await update
    assert done.status_code == 200, done.text[:200]
    lines = done.json()["data"]["vectors_0.py"]
    assert len(lines) == len(body["context_updates"]["vectors_0.py"][0]["new_lines"])  # type: ignore[index]
    # The update took a while (the pings ran meanwhile), and no ping round waited behind its redaction.
    assert len(latencies) >= 5, f"only {len(latencies)} pings during an update of {took:.2f} s"
    worst = max(latencies)
    assert worst < PING_WITHIN_S, f"a ping round took {worst:.2f} s (update: {took:.2f} s)"
    assert redacting_threads and threading.get_ident() not in redacting_threads


async def test_a_full_cpu_pool_answers_503_with_retry_after(big_api) -> None:
    client, state = big_api
    c, _ = await signed_in(client)
    busy = CpuPool(workers=1, queue=0)
    release = threading.Event()
    blocker = asyncio.create_task(busy.run(release.wait))
    while busy.admitted == 0:
        await asyncio.sleep(0.001)
    original, state.cpu = state.cpu, busy
    try:
        r = await c.post("/api/completion/multi-file-context/update", json=_update(1, 200))
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"].isdigit()
        assert "busy" in r.json()["message"]
    finally:
        state.cpu = original
        release.set()
        await blocker
        busy.close()
    r = await c.post("/api/completion/multi-file-context/update", json=_update(1, 200))
    assert r.status_code == 200, r.text
