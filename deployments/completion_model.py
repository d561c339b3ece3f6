"""The completion-model deployment: one class, one Serve deployment per registry entry."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from ray import serve
from ray.serve import metrics

from app.protocol import ChatCall, CompletionCall, CompletionResult
from deployments.inference.batcher import Batcher
from deployments.inference.generator import (
    CausalLMGenerator,
    GenRequest,
    GenResult,
    capped,
    pick_device,
    to_result,
)
from deployments.registry import ModelEntry
from deployments.replica_logs import route_to_replica_log

log = logging.getLogger("ray.serve")

LATENCY_BOUNDARIES_MS = [5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0]
BATCH_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]


def to_gen_request(call: CompletionCall, entry: ModelEntry) -> GenRequest:
    """The generator's request for an ingress call, with the entry's stop sequences and token limit."""
    return GenRequest(
        prefix=call.prefix,
        suffix=call.suffix,
        file_name=call.file_name,
        snippets=call.context_snippets,
        stop_sequences=tuple(entry.generation.stop_sequences) + call.stop_sequences,
        single_line=call.single_line,
        max_new_tokens=capped(call.max_new_tokens, entry.generation.max_new_tokens),
    )


class _Metrics:
    """Per-model request count, latency, batch size and tokens, exported through Ray's metrics."""

    def __init__(self, model: str) -> None:
        # Serve adds deployment/replica/application tags itself; ours names the registry entry.
        self.tags = {"model": model}
        # Ray annotates tag_keys as a 1-tuple (`Tuple[str]`) though it takes any number of keys.
        self.requests = metrics.Counter(
            "code4me_model_requests",
            "Completion requests served",
            tag_keys=cast("tuple[str]", ("model", "outcome")),
        )
        self.latency = metrics.Histogram(
            "code4me_model_latency_ms",
            "Completion latency in the replica (ms)",
            LATENCY_BOUNDARIES_MS,
            tag_keys=("model",),
        )
        self.batch = metrics.Histogram(
            "code4me_model_batch_size",
            "Most rows decoding together during a request",
            BATCH_BOUNDARIES,
            tag_keys=("model",),
        )
        self.tokens = metrics.Counter(
            "code4me_model_tokens_generated", "Tokens generated", tag_keys=("model",)
        )
        self.model = model

    def outcome(self, outcome: str) -> None:
        self.requests.inc(tags={"model": self.model, "outcome": outcome})


@serve.deployment
class CompletionModel:
    """Loads one Hugging Face causal LM and serves batched greedy completions (and chat, for chat models)."""

    def __init__(self, entry: ModelEntry) -> None:
        route_to_replica_log()
        import torch

        self.entry = entry
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
        # Not @serve.batch: it forms the next batch while the previous one still generates (see batcher.py).
        self.batcher: Batcher[GenRequest, GenResult] = Batcher(
            self._generate_batch, self.entry.batch.max_batch_size, self.entry.batch.batch_wait_timeout_s
        )
        self.metrics = _Metrics(self.entry.name)
        self.counters = {
            "requests": 0,
            "cancelled": 0,
            "tokens_generated": 0,
            "batches": 0,
            "max_batch_size_seen": 0,
        }
        self.recent: list[dict[str, Any]] = []
        log.info("model %s loaded on %s (pid %s)", self.entry.name, device, os.getpid())

    async def complete(self, call: CompletionCall) -> CompletionResult:
        """One completion; concurrent calls are batched; a cancelled caller leaves the queue or stops its row."""
        request = to_gen_request(call, self.entry)
        started = time.perf_counter()
        self.counters["requests"] += 1
        try:
            result = await self.batcher.submit(request)
        except asyncio.CancelledError:
            request.cancel.set()
            self.counters["cancelled"] += 1
            self.metrics.outcome("cancelled")
            raise
        except Exception:
            self.metrics.outcome("error")
            raise
        self.metrics.outcome("ok")
        replica_ms = (time.perf_counter() - started) * 1000
        self.metrics.latency.observe(replica_ms, tags=self.metrics.tags)
        return to_result(result, replica_ms)

    async def _generate_batch(
        self, requests: list[GenRequest], deliver: Callable[[int, GenResult], None]
    ) -> list[GenResult]:
        # Generation runs in a thread so the replica's event loop keeps accepting requests; requests that
        # arrive meanwhile join the running rows between decoding steps (`Batcher.admit`), and each row's
        # answer is handed over as soon as that row is done.
        results = await asyncio.to_thread(
            self.generator.generate_batch,
            requests,
            self.entry.generation.time_budget_s,
            deliver,
            self.batcher.admit,
            self.entry.batch.max_batch_size,
            self.entry.batch.max_joins_per_step,
        )
        self.counters["batches"] += 1
        peak = max(r.batch_rows for r in results)
        self.counters["max_batch_size_seen"] = max(self.counters["max_batch_size_seen"], peak)
        generated = sum(r.tokens_generated for r in results)
        self.counters["tokens_generated"] += generated
        if generated:
            self.metrics.tokens.inc(generated, tags=self.metrics.tags)
        for r in results:
            self.metrics.batch.observe(r.batch_rows, tags=self.metrics.tags)
        self.recent = (
            self.recent
            + [{"tokens_generated": r.tokens_generated, "stopped_by": r.stopped_by} for r in results]
        )[-50:]
        return results

    async def chat(self, call: ChatCall) -> AsyncIterator[str]:
        """Stream answer pieces for a conversation (call through a handle with stream=True)."""
        if not self.entry.is_chat:
            raise ValueError(f"model {self.entry.name} is not a chat model")
        cancel = threading.Event()
        messages = [{"role": m.role, "content": m.content} for m in call.messages]
        generation = self.entry.generation
        limit = capped(call.max_new_tokens, generation.max_new_tokens)
        pieces = self.generator.stream_chat(messages, limit, generation.time_budget_s, cancel)
        self.counters["requests"] += 1
        try:
            while True:
                piece = await asyncio.to_thread(next, pieces, None)
                if piece is None:
                    break
                yield piece
            self.metrics.outcome("ok")
        except asyncio.CancelledError:
            cancel.set()
            self.counters["cancelled"] += 1
            self.metrics.outcome("cancelled")
            raise
        finally:
            cancel.set()
            try:
                pieces.close()
            except ValueError:  # still running in its thread after a cancellation; it stops on `cancel`
                pass

    def stats(self) -> dict[str, Any]:
        """Counters of this replica (requests, cancellations, tokens, batch sizes) for status and tests."""
        return {
            "name": self.entry.name,
            "device": self.generator.device,
            "pid": os.getpid(),
            **self.counters,
            "recent": list(self.recent),
        }
