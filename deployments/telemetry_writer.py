"""TelemetryWriter Ray actors: named, detached and restartable consumers of the telemetry stream."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import ray
from ray.actor import ActorHandle

from app.workers.telemetry_writer import TelemetryWriter, tune_gc_for_writer_process
from deployments.singletons import SingletonActor, ensure_singleton, named_actors, retire

NAMESPACE = "code4me"  # deployments.singletons.NAMESPACE


WRITER_PREFIX = "code4me-telemetry-writer-"


def writer_name(index: int) -> str:
    """The actor name (and stream consumer name) of writer number `index`."""
    return f"{WRITER_PREFIX}{index}"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class TelemetryWriterActor(SingletonActor):
    """Runs one TelemetryWriter on its own event loop; after a crash Ray restarts it and it resumes its pending entries."""

    def __init__(
        self,
        redis_url: str,
        database_url: str,
        consumer: str,
        options: dict[str, Any] | None = None,
        settings_fingerprint: str = "",
    ) -> None:
        self._remember_settings(settings_fingerprint)
        tune_gc_for_writer_process()  # this worker process runs the writer only
        self.writer = TelemetryWriter(redis_url, database_url, consumer, **(options or {}))
        self._loop = asyncio.new_event_loop()
        # The consumer loop runs beside the actor's method calls, started here so a restart restarts it too.
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self.writer.run(),), daemon=True
        )
        self._thread.start()

    def status(self) -> dict[str, Any]:
        """This writer's counters and whether its loop is alive."""
        future = asyncio.run_coroutine_threadsafe(self.writer.status(), self._loop)
        return {**future.result(timeout=5), "alive": self._thread.is_alive()}

    def stream_status(self) -> dict[str, Any]:
        """Backlog, pending and dead letters of the stream this writer reads."""
        from app.telemetry.stream import stream_status

        future = asyncio.run_coroutine_threadsafe(stream_status(self.writer.redis), self._loop)
        return future.result(timeout=5)

    def pid(self) -> int:
        """The worker process id (fault tests kill it)."""
        import os

        return os.getpid()


def ensure_writers(
    redis_url: str,
    database_url: str,
    count: int,
    options: dict[str, Any] | None = None,
    namespace: str = NAMESPACE,
) -> list[ActorHandle]:
    """The `count` writer actors, running with these settings (any ingress replica may call this, at any time).

    Writers started with other settings are replaced, and writers beyond `count` (a deploy with fewer) are
    stopped: the remaining writers claim the entries they left pending.
    """
    names = [writer_name(i) for i in range(count)]
    handles = [
        ensure_singleton(
            TelemetryWriterActor, name, redis_url, database_url, name, options, namespace=namespace
        )
        for name in names
    ]
    for name in named_actors(WRITER_PREFIX, namespace=namespace):
        if name not in names:
            retire(name, namespace=namespace)
    return handles


def writer_handles(count: int) -> list[ActorHandle]:
    """Handles of the running writers (missing ones are skipped)."""
    handles = []
    for i in range(count):
        try:
            handles.append(ray.get_actor(writer_name(i), namespace=NAMESPACE))
        except ValueError:
            continue
    return handles
