"""The typed contract between the ingress and the model deployments: what crosses a Serve handle.

Ray-free and dependency-free, so both sides import it: the ingress (app.services.pipeline, through a
`ModelGateway`) and the model deployments (deployments.completion_model, deployments.inference). The builder
hands the ingress one `ModelCard` per registry entry; the defaults live in the registry (deployments.registry),
never here: every field of a call is set by the side that sends it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import JsonValue

ChatRole = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What the ingress knows of a registry entry: how to name and call it, and the entry as configured."""

    name: str
    # The id the entry pins (1-999, the Code4me plugin's fixed ids) or None (the database numbers it).
    pinned_id: int | None
    # The resolved local path or Hugging Face hub id the replica loads.
    source: str
    family: str
    is_chat: bool
    is_default: bool
    # How long one call may take in the replica; the ingress waits a second longer before it gives up.
    time_budget_s: float
    # The registry entry as validated (stored with the model row, for provenance).
    config: dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class Snippet:
    """A piece of another file of the project, put in the prompt before the cursor's file."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class CompletionCall:
    """One completion: the code around the cursor and how to stop."""

    prefix: str
    suffix: str
    file_name: str
    context_snippets: tuple[Snippet, ...]
    # Extra stop sequences of this request (the model's own ones are added by the replica).
    stop_sequences: tuple[str, ...]
    # Stop at the first newline (mid-line and automatic triggers).
    single_line: bool
    # A lower token limit than the model's own (OpenAI-style `max_tokens`); None: the model's limit.
    max_new_tokens: int | None


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """A model replica's answer to a CompletionCall."""

    completion: str
    # exp(mean log-prob) of the returned tokens; 0 for an empty completion.
    confidence: float
    token_logprobs: tuple[float, ...]
    generation_time_ms: int
    tokens_generated: int
    # "newline", "stop_sequence", "eos", "length", "time_budget" or "cancelled".
    stopped_by: str
    # The most rows that decoded together while this one did (1: it ran alone).
    batch_size: int
    # Time in the replica (queue + batch + generation + post-processing), for overhead breakdowns; None
    # from a model that runs in no replica (the scripted models of the tests).
    replica_ms: float | None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation."""

    role: ChatRole
    content: str


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A conversation for a chat model to continue (the answer is streamed as text pieces)."""

    messages: tuple[ChatMessage, ...]
    # A lower token limit than the model's own; None: the model's limit.
    max_new_tokens: int | None


class ModelGateway(Protocol):
    """How the ingress reaches model deployments (Serve handles in production, scripted ones in tests)."""

    async def complete(self, model_name: str, call: CompletionCall) -> CompletionResult:
        """Run one completion on the named model; raises on failure."""
        ...

    def chat(self, model_name: str, call: ChatCall) -> AsyncIterator[str]:
        """Stream the named chat model's answer; raises on failure."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length embeddings (all-MiniLM-L6-v2, 384 dimensions), one per text; raises when unavailable."""
        ...
