"""The CPU pool: work runs on its threads, admission is bounded, and a slot is held until the work is done."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.errors import ServiceUnavailable
from app.infra.cpu_pool import CpuPool


async def test_work_runs_on_a_worker_thread_not_the_loop() -> None:
    pool = CpuPool(workers=2, queue=0)
    try:
        name = await pool.run(lambda: threading.current_thread().name)
        assert name.startswith("c4m-cpu") and name != threading.current_thread().name
        assert await pool.run(sum, [1, 2, 3]) == 6
        assert pool.admitted == 0
    finally:
        pool.close()


async def test_a_full_pool_refuses_with_retry_after_and_recovers() -> None:
    pool = CpuPool(workers=1, queue=1)
    release = threading.Event()
    try:
        running = asyncio.create_task(pool.run(release.wait))
        waiting = asyncio.create_task(pool.run(release.wait))
        while pool.admitted < 2:
            await asyncio.sleep(0.001)
        with pytest.raises(ServiceUnavailable) as refused:
            await pool.run(release.wait)
        assert refused.value.headers is not None and refused.value.headers["Retry-After"].isdigit()
        assert pool.refused == 1
        release.set()
        assert await running and await waiting
        assert pool.admitted == 0
        assert await pool.run(lambda: 42) == 42
    finally:
        release.set()
        pool.close()


async def test_a_cancelled_request_keeps_its_slot_until_the_thread_is_done() -> None:
    pool = CpuPool(workers=1, queue=0)
    started, release = threading.Event(), threading.Event()

    def work() -> None:
        started.set()
        release.wait()

    try:
        task = asyncio.create_task(pool.run(work))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.admitted == 1  # the thread still works on it: the bound counts real work
        with pytest.raises(ServiceUnavailable):
            await pool.run(lambda: None)
        release.set()
        while pool.admitted:
            await asyncio.sleep(0.001)
        assert await pool.run(lambda: "free") == "free"
    finally:
        release.set()
        pool.close()
