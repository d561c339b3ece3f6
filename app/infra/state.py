"""What a running ingress holds: settings, database, Redis, the model gateway and the model registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.infra.cpu_pool import CpuPool
from app.infra.encryption import keyring_for
from app.infra.envelope import Keyring
from app.infra.mail import MailQueue
from app.infra.settings import Settings
from app.protocol import ModelCard, ModelGateway


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the ingress can call: its database id and its registry card."""

    model_id: int
    card: ModelCard

    @property
    def name(self) -> str:
        """The registry name (the Serve deployment is `model-<name>`)."""
        return self.card.name

    @property
    def is_chat(self) -> bool:
        """A chat model (answers chat requests only)."""
        return self.card.is_chat

    @property
    def is_default(self) -> bool:
        """Offered to clients that name no model."""
        return self.card.is_default

    @property
    def time_budget_s(self) -> float:
        """How long one call may take in the replica."""
        return self.card.time_budget_s


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
    # A pool of its own for analytics queries (AnalyticsDb), never shared with the request path.
    analytics_engine: AsyncEngine
    analytics_sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    gateway: ModelGateway
    # Where CPU-heavy request work runs (app/infra/cpu_pool.py), sized from settings.
    cpu: CpuPool
    models: dict[int, ModelInfo] = field(default_factory=dict)
    reference: ReferenceIds = field(default_factory=ReferenceIds)
    # In-flight model calls per session on this replica: a newer request of the session cancels the older.
    inflight: dict[Any, Any] = field(default_factory=dict)
    # WebSocket operations in flight on this replica per caller (`user:<id>` / `addr:<bucket>`), for the cap.
    ws_operations: dict[str, int] = field(default_factory=dict)
    # Listens for newer requests announced by other replicas (app/services/supersede.py).
    supersede_listener: Any = None
    # Mail sent off the request path (verification, password reset, sign-up notices).
    mail: MailQueue = field(default_factory=MailQueue)

    @property
    def keyring(self) -> Keyring:
        """The keys stored code is sealed and opened with (ENCRYPTION_KEYS)."""
        return keyring_for(self.settings)

    def model_by_name(self, name: str) -> ModelInfo | None:
        """Look a model up by its registry name."""
        return next((m for m in self.models.values() if m.name == name), None)
