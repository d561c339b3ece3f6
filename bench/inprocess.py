"""The in-process baseline: the generator the model deployment runs, fed the request it would build."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from app.schemas.completion import CompletionRequest
from app.services.completions import model_call
from deployments.completion_model import to_gen_request
from deployments.inference.generator import CausalLMGenerator, GenRequest, pick_device
from deployments.registry import ModelEntry


@lru_cache(maxsize=4)
def _load(
    source: str, family: str, dtype: str, max_context_tokens: int | None, threads: int, device: str
) -> CausalLMGenerator:
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # no notices in the printed tables
    # Same as CompletionModel.__init__ on CPU: one intra-op pool sized to the replica's CPUs.
    torch.set_num_threads(threads)
    return CausalLMGenerator(
        source, family, dtype=dtype, device=device, max_context_tokens=max_context_tokens
    )


def generator_for(entry: dict[str, Any]) -> tuple[CausalLMGenerator, ModelEntry]:
    """The generator a replica of this entry loads: on CUDA when the entry has GPUs (and one is visible),
    else on CPU with the replica's thread count."""
    import torch

    model = ModelEntry.model_validate(entry)
    threads = max(1, int(model.num_cpus))
    device = pick_device(model.num_gpus)
    gen = _load(model.resolved_source(), model.family, model.dtype, model.max_context_tokens, threads, device)
    torch.set_num_threads(threads)
    return gen, model


def where(gen: CausalLMGenerator) -> str:
    """Where an in-process baseline runs, for table labels: `cuda` or `cpu, N thread(s)`."""
    import torch

    if gen.device != "cpu":
        return str(gen.device)
    n = torch.get_num_threads()
    return f"cpu, {n} thread{'s' if n != 1 else ''}"


def gen_request(body: dict[str, Any], entry: ModelEntry) -> GenRequest:
    """The GenRequest the deployment builds for this HTTP body (ingress payload -> model request)."""
    return to_gen_request(model_call(CompletionRequest.model_validate(body)), entry)
