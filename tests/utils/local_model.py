"""The shipped default model in-process: the model gateway of a test app that needs real completions, no Ray.

It runs the replica's own inference code (`deployments.inference`: the family's prompt template, greedy
decoding) on `models/code4me-tiny`, so an answer is what the Serve deployment would give for the same call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from app.protocol import ChatCall, CompletionCall, CompletionResult
from deployments.inference.generator import CausalLMGenerator, GenRequest, capped, to_result
from deployments.registry import ModelEntry

# As configs/local.yaml (and the session's Serve app) name it: every test app shares one database.
TINY_ENTRY: dict[str, Any] = {
    "name": "code4me-tiny",
    "id": 1,
    "model_id": "models/code4me-tiny",
    "family": "code4me",
    "is_default": True,
    "generation": {"max_new_tokens": 24, "time_budget_s": 10.0},
}


class LocalModelGateway:
    """Completions of one registry entry's model, generated in a thread of this process."""

    def __init__(self, entry: dict[str, Any] | None = None) -> None:
        import torch

        torch.set_num_threads(1)
        self.entry = ModelEntry.model_validate(entry or TINY_ENTRY)
        self.generator = CausalLMGenerator(self.entry.resolved_source(), self.entry.family)
        self.calls: list[CompletionCall] = []
        self.answers: list[str] = []

    async def complete(self, model_name: str, call: CompletionCall) -> CompletionResult:
        """One greedy completion, as the model deployment answers it."""
        assert model_name == self.entry.name
        self.calls.append(call)
        generation = self.entry.generation
        request = GenRequest(
            prefix=call.prefix,
            suffix=call.suffix,
            file_name=call.file_name,
            snippets=call.context_snippets,
            stop_sequences=tuple(generation.stop_sequences) + call.stop_sequences,
            single_line=call.single_line,
            max_new_tokens=capped(
                call.max_new_tokens, generation.max_new_tokens
            ),  # as the deployment caps it
        )
        (result,) = await asyncio.to_thread(
            self.generator.generate_batch, [request], generation.time_budget_s
        )
        self.answers.append(result.completion)
        return to_result(result, replica_ms=None)

    async def chat(self, model_name: str, call: ChatCall) -> AsyncIterator[str]:
        """No chat model here."""
        raise RuntimeError("no chat model in this gateway")
        yield ""  # pragma: no cover - makes this an async generator

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """No embedder here (Tabby's clients bring their own snippets)."""
        raise RuntimeError("no embedder in this gateway")
