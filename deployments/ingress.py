"""The ingress deployment: the FastAPI app of app/ behind Ray Serve, calling model deployments by handle."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from app.bootstrap import build_state
from app.infra.encryption import keyring_for
from app.infra.settings import get_settings
from app.infra.state import AppState
from app.main import create_app
from app.protocol import ChatCall, CompletionCall, CompletionResult, ModelCard
from deployments.replica_logs import route_to_replica_log
from deployments.retention import start_retention_sweeper
from deployments.session_reaper import ensure_session_reaper
from deployments.telemetry_writer import ensure_writers


class RayModelGateway:
    """Reaches model deployments through their Serve handles."""

    def __init__(
        self, handles: dict[str, DeploymentHandle], embedder: DeploymentHandle | None = None
    ) -> None:
        self.handles = handles
        self.embedder = embedder

    async def complete(self, model_name: str, call: CompletionCall) -> CompletionResult:
        """One completion on the named model's deployment."""
        result = await self.handles[model_name].complete.remote(call)
        assert isinstance(result, CompletionResult)
        return result

    async def chat(self, model_name: str, call: ChatCall) -> AsyncIterator[str]:
        """The named chat model's answer, piece by piece, as the replica streams it."""
        pieces = self.handles[model_name].options(stream=True).chat.remote(call)
        assert isinstance(pieces, DeploymentResponseGenerator)  # stream=True answers a generator
        async for piece in pieces:
            yield piece

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Embeddings from the embedding deployment; RuntimeError when it is not deployed."""
        if self.embedder is None:
            raise RuntimeError("no embedding deployment in this application")
        return await self.embedder.embed.remote(texts)


@serve.deployment
@serve.ingress()
class Ingress:
    """Stateless: every piece of state lives in Redis or PostgreSQL, so any number of replicas can run."""

    def __init__(
        self,
        model_handles: dict[str, DeploymentHandle],
        embedder: DeploymentHandle | None,
        database_url: str,
        redis_url: str,
        model_cards: list[ModelCard],
    ) -> None:
        route_to_replica_log()
        self.gateway = RayModelGateway(model_handles, embedder)
        self.embedder = embedder
        self.database_url = database_url
        self.redis_url = redis_url
        self.model_cards = model_cards
        settings = get_settings()
        # The workers that seal stored code resolve ENCRYPTION_KEYS themselves (keys never travel as actor
        # arguments); its fingerprint is an argument, so a rotated keyring replaces them, and a worker whose
        # environment holds other keys refuses to start instead of writing what this ingress cannot read.
        keyring = keyring_for(settings).fingerprint
        # Idempotent: every replica makes sure the writers run, and a writer Ray restarted is found by name.
        self.writers = ensure_writers(
            redis_url,
            database_url,
            settings.telemetry_writers,
            {"batch_size": settings.telemetry_batch_size, "keyring_fingerprint": keyring},
        )
        self.retention = start_retention_sweeper(
            database_url, settings.retention_sweep_interval_s, settings.audit_retention_days
        )
        self.reaper = ensure_session_reaper(redis_url, database_url)
        if embedder is not None:
            # Context updates only mark files dirty in Redis; this (idempotent) actor indexes them.
            from deployments.context_indexer import ensure_context_indexer

            ensure_context_indexer(
                database_url, redis_url, serve.get_replica_context().app_name, keyring_fingerprint=keyring
            )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Build the app at replica start; its lifespan connects to PostgreSQL and Redis."""

        async def make_state() -> AppState:
            return await build_state(
                get_settings(), self.database_url, self.redis_url, self.gateway, self.model_cards
            )

        return create_app(make_state)
