"""The embedding deployment batches concurrent calls and hands each caller its own vectors."""

from __future__ import annotations

import asyncio

import pytest

from deployments.embedder import Embedder


@pytest.fixture(scope="module")
def replica():  # type: ignore[no-untyped-def]
    # The deployment's class itself (what a Serve replica instantiates), with the packaged MiniLM model.
    return Embedder.func_or_class()


async def test_concurrent_calls_share_a_batch_and_get_their_own_vectors(replica) -> None:  # type: ignore[no-untyped-def]
    calls = [["def add(a, b):"], ["import os", "print('hi')", "class A: pass"], [], ["return x"]]
    alone = [replica.embedder.embed(texts) for texts in calls]
    batches: list[int] = []
    embed = replica.embedder.embed

    def counted(texts: list[str]) -> list[list[float]]:
        batches.append(len(texts))
        return embed(texts)

    replica.embedder.embed = counted
    try:
        first = asyncio.create_task(replica.embed(["a first call, running while the others arrive"]))
        await asyncio.sleep(0)  # the first batch has started
        together = await asyncio.gather(*(replica.embed(texts) for texts in calls))
        await first
    finally:
        replica.embedder.embed = embed
    assert [len(v) for v in together] == [len(t) for t in calls]
    for got, want in zip(together, alone, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g == pytest.approx(w, abs=1e-5)
    # The first call alone, then the three non-empty calls (5 texts) in one batch; the empty one never
    # reaches the model.
    assert batches == [1, 5]
