"""Building an ingress's state: connections, the model registry in the database, reference ids."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.infra.cpu_pool import CpuPool
from app.infra.settings import Settings
from app.infra.state import AppState, ModelInfo, ReferenceIds
from app.protocol import ModelCard, ModelGateway
from app.services import audit
from app.services.audit import AuditAction
from app.services.supersede import listen
from db.engine import make_engine, make_sessionmaker
from db.tables import ModelName, PluginVersion, ProgrammingLanguage, TriggerType


class ModelIdConflict(RuntimeError):
    """A pinned model id that the database already gives to another model (or this model under another id)."""


async def _registered_id(db: AsyncSession, card: ModelCard, values: dict[str, Any]) -> int:
    """Upsert one registry entry by name; a pinned id is inserted as given and must agree with what is stored."""
    pinned = card.pinned_id
    if pinned is not None:
        by_name = (
            await db.execute(select(col(ModelName.model_id)).where(col(ModelName.model_name) == card.name))
        ).scalar()
        holder = (
            await db.execute(select(col(ModelName.model_name)).where(col(ModelName.model_id) == pinned))
        ).scalar()
        if by_name is not None and by_name != pinned:
            raise ModelIdConflict(
                f"model '{card.name}' is stored with id {by_name}; the config pins id {pinned}"
            )
        if holder is not None and holder != card.name:
            raise ModelIdConflict(f"model id {pinned} (pinned by '{card.name}') belongs to model '{holder}'")
        values = {**values, "model_id": pinned}
    new = insert(ModelName).values(**values)
    stmt = new.on_conflict_do_update(
        index_elements=["model_name"],
        set_={k: new.excluded[k] for k in values if k not in ("model_name", "model_id")},
    ).returning(col(ModelName.model_id))
    model_id = (await db.execute(stmt)).scalar_one()
    assert model_id is not None  # the primary key of the row just written
    return model_id


# The columns a registry entry sets: a difference in any of them is a config change (audited).
_REGISTERED = (
    "model_source",
    "family",
    "is_instruction_tuned",
    "is_default",
    "is_active",
    "registry_entry",
)


async def _stored_entry(db: AsyncSession, name: str) -> dict[str, Any] | None:
    """What the database holds of a registry model (None when it is new)."""
    row = (await db.execute(select(ModelName).where(col(ModelName.model_name) == name))).scalar_one_or_none()
    return None if row is None else {k: getattr(row, k) for k in _REGISTERED}


async def register_models(state: AppState, cards: list[ModelCard]) -> None:
    """Upsert the registry's models by name (ids stay stable across restarts; pinned ids as given); a model
    added or changed by a new config is audited, once however many replicas start with it."""
    async with state.sessionmaker() as db:
        # Replicas starting together register one after the other, so each change is seen (and audited) once.
        await db.execute(select(func.pg_advisory_xact_lock(func.hashtext("code4me.register_models"))))
        for card in cards:
            values = {
                "model_name": card.name,
                "model_source": card.source,
                "family": card.family,
                "is_instruction_tuned": card.is_chat,
                "is_default": card.is_default,
                "is_active": True,
                "registry_entry": card.config,
            }
            before = await _stored_entry(db, card.name)
            model_id = await _registered_id(db, card, values)
            state.models[model_id] = ModelInfo(model_id=model_id, card=card)
            if before != {k: values[k] for k in _REGISTERED}:
                await audit.record(
                    db,
                    AuditAction.MODEL_REGISTRY_CHANGE,
                    actor=None,
                    address=None,
                    target=audit.Target("model", str(model_id)),
                    detail={"change": "added" if before is None else "changed"},
                )
        await db.commit()


async def load_reference_ids(state: AppState) -> None:
    """Cache the seeded reference ids so requests can be checked before anything is written."""
    async with state.sessionmaker() as db:
        languages = (await db.execute(select(col(ProgrammingLanguage.language_id)))).scalars()
        triggers = (await db.execute(select(col(TriggerType.trigger_type_id)))).scalars()
        versions = (await db.execute(select(col(PluginVersion.version_id)))).scalars()
        state.reference = ReferenceIds(set(languages), set(triggers), set(versions))


def redis_client(redis_url: str, settings: Settings) -> Redis:
    """A client on a bounded, blocking pool: a burst waits briefly for a connection, then fails as an outage.

    redis-py's default pool refuses at once when its connections are all in use (MaxConnectionsError): a
    flood on one socket then failed other users' requests and the rate limiter's checks. Here a caller
    waits up to `redis_pool_timeout_s`; only then is it a ConnectionError (503 with Retry-After).
    """
    pool = BlockingConnectionPool.from_url(
        redis_url, max_connections=settings.redis_pool_size, timeout=settings.redis_pool_timeout_s
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections


async def build_state(
    settings: Settings,
    database_url: str,
    redis_url: str,
    gateway: ModelGateway,
    model_cards: list[ModelCard],
) -> AppState:
    """Connect to PostgreSQL and Redis, register the models, load reference data."""
    engine = make_engine(database_url)
    analytics = make_engine(database_url, pool_size=settings.analytics_pool_size, max_overflow=0)
    state = AppState(
        settings=settings,
        engine=engine,
        sessionmaker=make_sessionmaker(engine),
        analytics_engine=analytics,
        analytics_sessionmaker=make_sessionmaker(analytics),
        redis=redis_client(redis_url, settings),
        gateway=gateway,
        cpu=CpuPool(settings.cpu_workers, settings.cpu_queue),
    )
    await register_models(state, model_cards)
    await load_reference_ids(state)
    ready = asyncio.Event()
    state.supersede_listener = asyncio.create_task(
        listen(state.redis, state.inflight, ready), name="supersede"
    )
    try:  # subscribed before the first request, unless Redis is down (the listener keeps trying then)
        await asyncio.wait_for(ready.wait(), timeout=3)
    except TimeoutError:
        pass
    return state


async def close_state(state: AppState) -> None:
    """Stop the listener, deliver the mail still in flight (briefly), release connections."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.mail.drained(), timeout=10)
    if state.supersede_listener is not None:
        state.supersede_listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state.supersede_listener
    state.cpu.close()
    await state.redis.aclose()
    await state.engine.dispose()
    await state.analytics_engine.dispose()
