"""RetentionSweeper: a named Ray actor that deletes data older than each user's retention period, on a schedule.

Thin on purpose: the rules live in app.services.retention.delete_expired_data (tested without Ray).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import ray

from app.services.retention import delete_expired_data
from db.engine import make_engine, make_sessionmaker
from deployments.singletons import NAMESPACE, SingletonActor, ensure_singleton

log = logging.getLogger(__name__)
ACTOR_NAME = "retention-sweeper"


@ray.remote(num_cpus=0, max_restarts=-1)
class RetentionSweeper(SingletonActor):
    """Runs one sweep every `interval_s` seconds once started; a failed sweep is retried at the next tick."""

    def __init__(
        self,
        database_url: str,
        interval_s: float,
        audit_retention_days: int | None = None,
        settings_fingerprint: str = "",
    ) -> None:
        self._remember_settings(settings_fingerprint)
        self.engine = make_engine(database_url, pool_size=1)
        self.sessionmaker = make_sessionmaker(self.engine)
        self.interval_s = interval_s
        self.audit_retention_days = audit_retention_days
        self.last: dict[str, Any] | None = None
        self._loop: asyncio.Task[None] | None = None

    async def sweep(self) -> dict[str, Any]:
        """One sweep now; returns how many rows of each kind went."""
        async with self.sessionmaker() as db:
            result = await delete_expired_data(
                db, datetime.now(UTC), audit_retention_days=self.audit_retention_days
            )
        self.last = {"at": datetime.now(UTC).isoformat(), **asdict(result)}
        return self.last

    async def _run(self) -> None:
        while True:
            try:
                counts = await self.sweep()
                log.info("retention sweep deleted %s", {k: v for k, v in counts.items() if k != "at"})
            except Exception as exc:  # noqa: BLE001 - the database may be down; try again next tick
                log.warning("retention sweep failed (%s)", type(exc).__name__)
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        """Start the schedule (idempotent)."""
        if self._loop is None or self._loop.done():
            self._loop = asyncio.get_running_loop().create_task(self._run())

    async def status(self) -> dict[str, Any] | None:
        """The outcome of the last sweep."""
        return self.last

    async def schedule(self) -> dict[str, Any]:
        """How often it sweeps, and whether the schedule runs."""
        return {"interval_s": self.interval_s, "running": self._loop is not None and not self._loop.done()}


def start_retention_sweeper(
    database_url: str,
    interval_s: float,
    audit_retention_days: int | None = None,
    *,
    namespace: str = NAMESPACE,
) -> Any:
    """The detached, named sweeper running with this interval and audit retention (None: audit records are
    not purged), its schedule started; returns its handle."""
    actor = ensure_singleton(
        RetentionSweeper, ACTOR_NAME, database_url, interval_s, audit_retention_days, namespace=namespace
    )
    actor.start.remote()
    return actor
