"""The ContextIndexer Ray actor: a named, restartable home for app.workers.context_indexer.ContextIndexer.

It needs no call per edit: the update request marks files dirty in Redis (in the same transaction as the
edit) and the actor polls those marks, so a restarted actor, or one started after the edits, picks up
every pending file. Embeddings come from the application's "embedder" Serve deployment.

Start it once per cluster, e.g. from the ingress replica's constructor (idempotent, any replica may call):

    ensure_context_indexer(database_url, redis_url, app_name=serve.get_replica_context().app_name)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from typing import Any

import ray
from ray import serve

from app.infra.settings import get_settings
from deployments.singletons import SingletonActor, ensure_singleton

log = logging.getLogger(__name__)

ACTOR_NAME = "context-indexer"
NAMESPACE = "code4me"
EMBEDDER_DEPLOYMENT = "embedder"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ContextIndexerActor(SingletonActor):
    """Runs the indexing loop in its own thread and event loop, so a restarted actor resumes by itself."""

    def __init__(
        self,
        database_url: str,
        redis_url: str,
        app_name: str = "code4me",
        poll_s: float = 0.5,
        keyring_fingerprint: str | None = None,
        settings_fingerprint: str = "",
    ) -> None:
        self._remember_settings(settings_fingerprint)
        self.app_name = app_name
        self._handle: Any = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._indexer: Any = None
        self._thread = threading.Thread(
            target=self._serve_forever,
            args=(database_url, redis_url, poll_s, keyring_fingerprint),
            name="context-indexer",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(timeout=120) or self._indexer is None:
            raise RuntimeError("the context indexer loop did not start")

    def _serve_forever(
        self, database_url: str, redis_url: str, poll_s: float, keyring_fingerprint: str | None
    ) -> None:
        from redis.asyncio import Redis

        from app.infra.encryption import keyring_for
        from app.workers.context_indexer import ContextIndexer
        from db.engine import make_engine, make_sessionmaker

        asyncio.set_event_loop(self._loop)
        try:
            settings = get_settings()
            keyring = keyring_for(settings)
            if keyring_fingerprint is not None and keyring.fingerprint != keyring_fingerprint:
                # It would seal chunks the ingress cannot open.
                raise RuntimeError("this process's ENCRYPTION_KEYS differ from the ingress's")
            self._indexer = ContextIndexer(
                redis=Redis.from_url(redis_url),
                sessionmaker=make_sessionmaker(make_engine(database_url, pool_size=2)),
                embed=self._embed,
                keyring=keyring,
                debounce_s=settings.context_index_debounce_s,
                max_wait_s=settings.context_index_max_wait_s,
            )
            self._stop = asyncio.Event()
        finally:
            self._ready.set()
        self._loop.run_until_complete(self._indexer.run_forever(self._stop, poll_s))

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        # Looked up on first use: the actor may start while the application is still deploying.
        if self._handle is None:
            self._handle = serve.get_deployment_handle(EMBEDDER_DEPLOYMENT, app_name=self.app_name)
        return await self._handle.embed.remote(texts)

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def ping(self) -> bool:
        """True while the indexing loop runs."""
        return self._thread.is_alive()

    def run_once(self) -> dict[str, int]:
        """Index what is due now, besides the loop (tests, operators)."""
        return vars(self._call(self._indexer.run_once()))

    def stats(self) -> dict[str, int]:
        """Totals since the actor (re)started, and the files waiting."""
        return {**vars(self._indexer.totals), "pending": self._call(self._indexer.pending())}

    def forget_project(self, project_id: str) -> int:
        """Delete a project's chunks now (consent withdrawn); returns how many."""
        return int(self._call(self._indexer.forget_project(uuid.UUID(project_id))))


def ensure_context_indexer(
    database_url: str,
    redis_url: str,
    app_name: str = "code4me",
    *,
    keyring_fingerprint: str | None = None,
    namespace: str = NAMESPACE,
) -> Any:
    """The cluster's ContextIndexer actor (detached, restartable) for these settings; it runs at once."""
    return ensure_singleton(
        ContextIndexerActor,
        ACTOR_NAME,
        database_url,
        redis_url,
        app_name,
        keyring_fingerprint=keyring_fingerprint,
        namespace=namespace,
    )
