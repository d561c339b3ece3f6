"""The one place CPU-heavy request work runs: a bounded pool of worker threads, never the event loop.

Secret redaction of request text, applying and redacting multi-file context edits, and ranking live
files for snippets can take tens of milliseconds on a large request. On the replica's event loop that
time is taken from every other request of the replica (`/api/ping` included); here it runs on one of
`CPU_WORKERS` threads while the loop goes on. The GIL still serialises Python code, but the loop gets it
back at least every switch interval (5 ms), and each piece of such work (regex calls on bounded windows,
see app/redaction) is short.

Admission is bounded: at most `CPU_WORKERS + CPU_QUEUE` jobs are running or waiting; past that a request
is refused at once with 503 and `Retry-After` (through the error map), instead of queueing without end
behind a hostile client. A job counts until its thread has finished it, even when the request that
submitted it was cancelled meanwhile, so the bound holds for the threads' real work.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from app.errors import RETRY_AFTER_S, ServiceUnavailable

P = ParamSpec("P")
T = TypeVar("T")


class CpuPool:
    """A bounded thread pool for CPU-heavy request work (`await pool.run(fn, *args)`)."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.limit = workers + queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="c4m-cpu")
        self._lock = threading.Lock()
        self._admitted = 0
        self.refused = 0

    @property
    def admitted(self) -> int:
        """Jobs running or waiting for a thread now."""
        return self._admitted

    def _release(self, _: Future[Any]) -> None:
        with self._lock:
            self._admitted -= 1

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on a worker thread; 503 with Retry-After when the pool is full."""
        with self._lock:
            if self._admitted >= self.limit:
                self.refused += 1
                raise ServiceUnavailable(
                    "The server is busy; retry later", headers={"Retry-After": str(RETRY_AFTER_S)}
                )
            self._admitted += 1
        try:
            future = self._executor.submit(functools.partial(fn, *args, **kwargs))
        except BaseException:
            with self._lock:
                self._admitted -= 1
            raise
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop taking work; jobs not started yet are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
