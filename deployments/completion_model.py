"""The completion-model deployment: one class, one Serve deployment per registry entry."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from ray import serve

from deployments.generator import CausalLMGenerator, GenRequest, pick_device
from deployments.prompts import Snippet
from serve.registry import ModelEntry

log = logging.getLogger("ray.serve")


def to_gen_request(payload: dict[str, Any], entry: ModelEntry) -> GenRequest:
    """The model-side request from the ingress payload, with the entry's generation defaults."""
    stops = tuple(entry.generation.stop_sequences) + tuple(payload.get("stop_sequences") or ())
    return GenRequest(
        prefix=str(payload.get("prefix", "")),
        suffix=str(payload.get("suffix", "")),
        file_name=str(payload.get("file_name", "")),
        snippets=tuple(Snippet(s["path"], s["text"]) for s in payload.get("context_snippets") or ()),
        stop_sequences=stops,
        single_line=bool(payload.get("single_line", True)),
        max_new_tokens=min(int(payload.get("max_new_tokens") or entry.generation.max_new_tokens), entry.generation.max_new_tokens),
    )


@serve.deployment
class CompletionModel:
    """Loads one Hugging Face causal LM and serves batched greedy completions."""

    def __init__(self, entry: dict[str, Any]) -> None:
        import torch

        self.entry = ModelEntry.model_validate(entry)
        device = pick_device(self.entry.num_gpus)
        if device == "cpu":
            # One intra-op thread pool per replica, sized to the CPUs Ray reserved for it.
            torch.set_num_threads(max(1, int(self.entry.num_cpus)))
        self.generator = CausalLMGenerator(
            self.entry.resolved_source(),
            self.entry.family,
            dtype=self.entry.dtype,
            device=device,
            max_context_tokens=self.entry.max_context_tokens,
        )
        self._generate_batch.set_max_batch_size(self.entry.batch.max_batch_size)
        self._generate_batch.set_batch_wait_timeout_s(self.entry.batch.batch_wait_timeout_s)
        log.info("model %s loaded on %s (pid %s)", self.entry.name, device, os.getpid())

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One completion; concurrent calls are batched."""
        return await self._generate_batch(to_gen_request(payload, self.entry))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _generate_batch(self, requests: list[GenRequest]) -> list[dict[str, Any]]:
        # Generation runs in a thread so the replica's event loop keeps accepting (and batching) requests.
        results = await asyncio.to_thread(
            self.generator.generate_batch, requests, self.entry.generation.time_budget_s
        )
        return [
            {
                "completion": r.completion,
                "confidence": r.confidence,
                "token_logprobs": r.token_logprobs,
                "generation_time_ms": r.generation_time_ms,
                "tokens_generated": r.tokens_generated,
                "stopped_by": r.stopped_by,
                "batch_size": len(requests),
            }
            for r in results
        ]

    def info(self) -> dict[str, Any]:
        """The entry this replica serves (for status and tests)."""
        return {"name": self.entry.name, "family": self.entry.family, "device": self.generator.device}
