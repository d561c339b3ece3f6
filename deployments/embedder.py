"""The embedding deployment: MiniLMEmbedder (deployments/inference/embedding.py) behind Serve, calls batched."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import torch
from ray import serve

from deployments.inference.batcher import Batcher
from deployments.inference.embedding import MiniLMEmbedder
from deployments.replica_logs import route_to_replica_log


@serve.deployment
class Embedder:
    """Serve deployment around MiniLMEmbedder; concurrent calls are batched (deployments/inference/batcher.py).

    Not @serve.batch, for the reasons in batcher.py: a query embedding reaching an idle replica would
    wait out the batch timeout, and the batch would run on the replica's event loop (with Serve's
    low-latency mode, user code shares that loop) instead of in a thread.
    """

    def __init__(self, model_path: str | None = None, max_batch_size: int = 32) -> None:
        route_to_replica_log()
        torch.set_num_threads(1)
        self.embedder = MiniLMEmbedder(model_path)
        self.batcher: Batcher[list[str], list[list[float]]] = Batcher(self._embed_batch, max_batch_size)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed a list of texts (one call, possibly batched with others)."""
        if not texts:
            return []
        return await self.batcher.submit(texts)

    async def _embed_batch(
        self, calls: list[list[str]], deliver: Callable[[int, list[list[float]]], None]
    ) -> list[list[list[float]]]:
        flat = [t for call in calls for t in call]
        vectors = await asyncio.to_thread(self.embedder.embed, flat)
        out, i = [], 0
        for call in calls:
            out.append(vectors[i : i + len(call)])
            i += len(call)
        return out
