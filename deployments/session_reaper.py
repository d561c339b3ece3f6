"""SessionReaper Ray actor: one named, detached, restartable listener for token expiry events."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import ray
from ray.actor import ActorHandle

from app.workers.session_reaper import SessionReaper
from deployments.singletons import SingletonActor, ensure_singleton

ACTOR_NAME = "code4me-session-reaper"
NAMESPACE = "code4me"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class SessionReaperActor(SingletonActor):
    """Runs the SessionReaper on its own event loop; a restarted actor sweeps what it missed first."""

    def __init__(
        self, redis_url: str, database_url: str, sweep_interval_s: float, settings_fingerprint: str = ""
    ) -> None:
        self._remember_settings(settings_fingerprint)
        self.reaper = SessionReaper(redis_url, database_url, sweep_interval_s=sweep_interval_s)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self.reaper.run(),), daemon=True
        )
        self._thread.start()

    def status(self) -> dict[str, Any]:
        """Sessions ended so far and whether the loop is alive."""
        return {**self.reaper.status(), "alive": self._thread.is_alive()}


def ensure_session_reaper(
    redis_url: str, database_url: str, sweep_interval_s: float = 30.0, *, namespace: str = NAMESPACE
) -> ActorHandle:
    """The reaper, running with these settings (every ingress replica calls this)."""
    return ensure_singleton(
        SessionReaperActor, ACTOR_NAME, redis_url, database_url, sweep_interval_s, namespace=namespace
    )
