"""Dynamic batching that forms each batch when the model is free to run it.

Why not `@serve.batch`: Serve's batch queue forms the next batch as soon as the previous one has
*started* (it then waits for the concurrency semaphore), gathering only the requests that arrive
within `batch_wait_timeout_s` of the first. While a CPU batch generates for a second, every later
request ends up in a string of small batches queued behind it, so batches stayed small under load
and an idle replica still made every request wait the full timeout.

Here one worker task per replica takes requests off the queue only when the generator is free:

* under load, everything that arrived during the previous batch (up to `max_batch_size`) forms the
  next one at once, with no waiting;
* when the replica was idle, the first request waits at most `wait_s` for company (0: not at all);
* a caller that goes away while still queued is dropped before its batch forms; one that goes away
  during generation is the generator's business (its row's cancel event);
* `run_batch(items, deliver)` may hand a row's result over before the batch ends with
  `deliver(index, result)` (callable from any thread): a short completion does not wait for the
  batch's longest one;
* `admit(n)` (callable from any thread while a batch runs) moves up to n queued requests into the
  running batch, numbered after its items: a generator that decodes token by token takes newcomers
  in between steps (continuous batching) instead of leaving them queued until the batch's last row
  is done. `run_batch` then returns results for the grown batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R] = field(repr=False)


class Batcher(Generic[T, R]):
    """Collects concurrent `submit` calls into batches for `run_batch` (one batch at a time)."""

    def __init__(
        self,
        run_batch: Callable[[list[T], Callable[[int, R], None]], Awaitable[list[R]]],
        max_batch_size: int,
        wait_s: float = 0.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if wait_s < 0:
            raise ValueError("wait_s must not be negative")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._queue: deque[_Pending[T, R]] = deque()
        # The running batch's requests (grown by `admit`); the lock guards it and the queue, which a
        # generation thread reads through `admit` while the event loop appends to it.
        self._running: list[_Pending[T, R]] | None = None
        self._lock = threading.Lock()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    def queued(self) -> int:
        """Requests waiting for a batch (callers that went away excluded)."""
        with self._lock:
            return sum(1 for p in self._queue if not p.future.done())

    async def submit(self, item: T) -> R:
        """The result for `item`, computed in some batch; cancelling the caller drops it if not yet started."""
        loop = asyncio.get_running_loop()
        if self._arrived is None:
            self._arrived = asyncio.Event()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work(), name="batcher")
        pending: _Pending[T, R] = _Pending(item, loop.create_future())
        with self._lock:
            self._queue.append(pending)
        self._arrived.set()
        return await pending.future

    async def close(self) -> None:
        """Stop the worker; queued callers get CancelledError."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for pending in self._queue:
            pending.future.cancel()
        self._queue.clear()

    async def _next_arrival(self, timeout: float | None) -> bool:
        """Wait for a new submit (at most `timeout` s); False on timeout."""
        assert self._arrived is not None
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def admit(self, n: int) -> list[T]:
        """Move up to n queued requests into the running batch (from any thread); their items, in order.

        They are numbered after the batch's current items, so `deliver(index, ...)` and the returned
        results address them by that position. Outside a running batch nothing is admitted.
        """
        admitted: list[T] = []
        with self._lock:
            if self._running is None:
                return admitted
            while self._queue and len(admitted) < n:
                pending = self._queue.popleft()
                if not pending.future.done():  # its caller went away while it waited
                    self._running.append(pending)
                    admitted.append(pending.item)
        return admitted

    @staticmethod
    def _deliverer(batch: list[_Pending[T, R]], loop: asyncio.AbstractEventLoop) -> Callable[[int, R], None]:
        def resolve(future: asyncio.Future[Any], result: R) -> None:
            if not future.done():
                future.set_result(result)

        def deliver(index: int, result: R) -> None:
            loop.call_soon_threadsafe(resolve, batch[index].future, result)

        return deliver

    def _take(self) -> list[_Pending[T, R]]:
        batch: list[_Pending[T, R]] = []
        with self._lock:
            while self._queue and len(batch) < self.max_batch_size:
                pending = self._queue.popleft()
                if not pending.future.done():  # its caller went away while it waited
                    batch.append(pending)
            self._running = batch
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        was_idle = True  # a fresh worker: nothing was running
        while True:
            was_idle = was_idle or not self.queued()
            while not self.queued():
                await self._next_arrival(None)
            if was_idle and self.wait_s > 0:
                # The model had nothing to do: give requests sent at the same moment a chance to join.
                deadline = loop.time() + self.wait_s
                while self.queued() < self.max_batch_size and (left := deadline - loop.time()) > 0:
                    if not await self._next_arrival(left):
                        break
            batch = self._take()
            was_idle = False  # whatever arrives while this batch runs has been waiting: no window next time
            if not batch:
                was_idle = True
                continue
            try:
                results = await self.run_batch([p.item for p in batch], self._deliverer(batch, loop))
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the failure
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finally:
                with self._lock:
                    self._running = None  # nothing joins a batch that has ended
            if len(results) != len(batch):
                error = RuntimeError(
                    f"batch function returned {len(results)} results for {len(batch)} requests"
                )
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)
