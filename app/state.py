"""What a running ingress holds: settings, database, Redis, the model gateway and the model registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.settings import Settings


@dataclass(frozen=True)
class ModelInfo:
    """A model the ingress can call: its database id, registry name and kind."""

    model_id: int
    name: str
    is_chat: bool = False
    is_default: bool = False
    time_budget_s: float = 5.0


class ModelGateway(Protocol):
    """How the ingress reaches model deployments (Ray handles in production, fakes in unit tests)."""

    async def complete(self, model_name: str, request: dict[str, Any]) -> dict[str, Any]:
        """Run one completion on the named model; raises on failure."""
        ...

    def chat(self, model_name: str, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """Stream the named chat model's answer to the messages; raises on failure."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length embeddings (all-MiniLM-L6-v2, 384 dimensions), one per text; raises when unavailable."""
        ...


@dataclass
class ReferenceIds:
    """Ids of seeded reference rows, checked before anything is stored."""

    languages: set[int] = field(default_factory=set)
    trigger_types: set[int] = field(default_factory=set)
    plugin_versions: set[int] = field(default_factory=set)


@dataclass
class AppState:
    """Everything a request handler may use; built once per ingress replica."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    gateway: ModelGateway
    models: dict[int, ModelInfo] = field(default_factory=dict)
    reference: ReferenceIds = field(default_factory=ReferenceIds)
    # In-flight model calls per session on this replica: a newer request of the session cancels the older.
    inflight: dict[Any, Any] = field(default_factory=dict)
    # Listens for newer requests announced by other replicas (app/supersede.py).
    supersede_listener: Any = None

    def model_by_name(self, name: str) -> ModelInfo | None:
        """Look a model up by its registry name."""
        return next((m for m in self.models.values() if m.name == name), None)
