"""The model replica's batcher: batches form when the model is free, callers that leave are dropped."""

from __future__ import annotations

import asyncio
import time

import pytest

from deployments.inference.batcher import Batcher


class Model:
    """A fake model: records each batch and takes `seconds` per batch."""

    def __init__(self, seconds: float = 0.05, fail_on: int | None = None) -> None:
        self.seconds = seconds
        self.batches: list[list[int]] = []
        self.fail_on = fail_on

    async def __call__(self, items: list[int], deliver) -> list[int]:  # type: ignore[no-untyped-def]
        self.batches.append(list(items))
        await asyncio.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError("bad item")
        return [i * 10 for i in items]


async def test_requests_arriving_during_a_batch_form_the_next_one_together() -> None:
    model = Model(seconds=0.1)
    batcher: Batcher[int, int] = Batcher(model, max_batch_size=16, wait_s=0.0)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.02)  # the first batch ([0]) is running
    rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 9)]
    assert await first == 0
    assert await asyncio.gather(*rest) == [i * 10 for i in range(1, 9)]
    # Serve's own batch queue would have formed [1] (and more small batches) while [0] ran.
    assert model.batches == [[0], list(range(1, 9))]
    await batcher.close()


async def test_max_batch_size_is_respected_and_order_kept() -> None:
    model = Model(seconds=0.02)
    batcher: Batcher[int, int] = Batcher(model, max_batch_size=3, wait_s=0.0)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(7)))
    assert results == [i * 10 for i in range(7)]
    assert [len(b) for b in model.batches] == [3, 3, 1]
    assert [i for b in model.batches for i in b] == list(range(7))
    await batcher.close()


async def test_an_idle_replica_does_not_wait_with_zero_wait() -> None:
    model = Model(seconds=0.0)
    batcher: Batcher[int, int] = Batcher(model, max_batch_size=8, wait_s=0.0)
    await batcher.submit(1)  # worker started
    began = time.perf_counter()
    for i in range(20):
        await batcher.submit(i)
    per_call_ms = (time.perf_counter() - began) * 1000 / 20
    assert per_call_ms < 5, per_call_ms  # no 5 ms (or any) batch window per lone request
    assert all(len(b) == 1 for b in model.batches)
    await batcher.close()


async def test_an_idle_replica_waits_for_company_up_to_wait_s() -> None:
    model = Model(seconds=0.0)
    batcher: Batcher[int, int] = Batcher(model, max_batch_size=8, wait_s=0.2)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.submit(2))
    assert await asyncio.gather(first, second) == [10, 20]
    assert model.batches == [[1, 2]]
    # A full batch does not wait for the rest of the window.
    began = time.perf_counter()
    await asyncio.gather(*(batcher.submit(i) for i in range(8)))
    assert time.perf_counter() - began < 0.15
    await batcher.close()


async def test_a_caller_that_leaves_while_queued_never_reaches_the_model() -> None:
    model = Model(seconds=0.1)
    batcher: Batcher[int, int] = Batcher(model, max_batch_size=8, wait_s=0.0)
    running = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.02)
    gone = asyncio.create_task(batcher.submit(99))
    kept = asyncio.create_task(batcher.submit(5))
    await asyncio.sleep(0.01)
    gone.cancel()
    assert await running == 0
    assert await kept == 50
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert 99 not in [i for b in model.batches for i in b]
    await batcher.close()


async def test_a_failing_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    model = Model(seconds=0.01, fail_on=3)
    batcher: Batcher[int, int] = Batcher(model, max_batch_size=4, wait_s=0.0)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results[:4])
    assert results[4:] == [40, 50]
    await batcher.close()


async def test_wrong_result_count_is_an_error_not_a_hang() -> None:
    async def short(items: list[int], deliver) -> list[int]:  # type: ignore[no-untyped-def]
        return items[:-1]

    batcher: Batcher[int, int] = Batcher(short, max_batch_size=4)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(2)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    await batcher.close()


def test_bad_settings_are_refused() -> None:
    async def run(items: list[int], deliver) -> list[int]:  # type: ignore[no-untyped-def]
        return items

    with pytest.raises(ValueError):
        Batcher(run, max_batch_size=0)
    with pytest.raises(ValueError):
        Batcher(run, max_batch_size=1, wait_s=-1)


async def test_a_row_delivered_early_does_not_wait_for_the_batch() -> None:
    async def slow_tail(items: list[int], deliver) -> list[int]:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        # The first row is ready at once (handed over from a worker thread, as the generator does).
        await loop.run_in_executor(None, deliver, 0, items[0] * 10)
        await asyncio.sleep(0.3)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(slow_tail, max_batch_size=4, wait_s=0.05)
    began = time.perf_counter()
    first = asyncio.create_task(batcher.submit(1))
    second = asyncio.create_task(batcher.submit(2))
    assert await first == 10
    assert time.perf_counter() - began < 0.2
    assert await second == 20
    assert time.perf_counter() - began >= 0.3
    await batcher.close()


async def test_requests_queued_during_a_batch_can_join_it() -> None:
    started = asyncio.Event()
    seen: list[list[int]] = []

    async def continuous(items: list[int], deliver) -> list[int]:  # type: ignore[no-untyped-def]
        started.set()
        await asyncio.sleep(0.1)  # newcomers queue meanwhile
        # A generation thread takes them between decoding steps.
        joined = await asyncio.to_thread(batcher.admit, 2)
        seen.append(list(items) + joined)
        await asyncio.to_thread(deliver, len(items), joined[0] * 10)  # a joiner answered early
        return [i * 10 for i in items + joined]

    batcher: Batcher[int, int] = Batcher(continuous, max_batch_size=8)
    first = asyncio.create_task(batcher.submit(1))
    await started.wait()
    later = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.01)
    later[2].cancel()  # went away while queued: never admitted
    assert await first == 10
    assert await asyncio.gather(later[0], later[1]) == [20, 30]
    assert seen == [[1, 2, 3]]
    assert batcher.queued() == 0
    assert batcher.admit(4) == [], "nothing is admitted outside a running batch"
    await batcher.close()


async def test_admit_takes_no_more_than_asked() -> None:
    started = asyncio.Event()

    async def continuous(items: list[int], deliver) -> list[int]:  # type: ignore[no-untyped-def]
        started.set()
        await asyncio.sleep(0.05)
        joined = batcher.admit(1)
        return [i * 10 for i in items + joined]

    batcher: Batcher[int, int] = Batcher(continuous, max_batch_size=8)
    first = asyncio.create_task(batcher.submit(1))
    await started.wait()
    rest = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    assert await first == 10
    # 2 joined the first batch; 3 stayed queued and forms the next one.
    assert await asyncio.gather(*rest) == [20, 30]
    await batcher.close()
