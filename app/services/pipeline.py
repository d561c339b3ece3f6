"""The one request pipeline of every route that asks models: completion, chat, and the routes to come.

A route's service calls, in order: `resolve_models` (the requested models; where a study's arm will swap
them), `check_reference_ids` / `check_size` (refuse what cannot be stored before anything is stored),
`redact_context` / `redact_texts` (secrets never reach storage; on the CPU pool, off the event loop), `fan_out` (the models side by side, each within its time
budget, a failure becoming a failure slot, optionally superseded by a newer request of the session),
`Storage.of` + `query_event` (only what the user's preferences allow), and `commit` (the telemetry events
and the read-your-writes copies in one Redis round trip). Services return domain results with their stage
timings as data; routers, HTTP and WebSocket alike, shape the envelopes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.errors import Conflict, Forbidden, PayloadTooLarge, Unprocessable
from app.identity import tokens
from app.infra.state import AppState, ModelInfo
from app.redaction import redact
from app.schemas.completion import BehavioralTelemetry, CompletionContext, ContextualTelemetry
from app.schemas.user import Preference
from app.services.supersede import cancel_older
from app.telemetry.events import BehavioralRow, ContextRow, ContextualRow, QueryEvent
from app.telemetry.stream import add_events
from db.tables import utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Requester(Protocol):
    """Who asks: a user row, or the hot path's cached copy of it (auth.CallerInfo)."""

    @property
    def user_id(self) -> uuid.UUID: ...

    @property
    def preference(self) -> dict[str, Any] | None: ...


def resolve_models(state: AppState, model_ids: list[int], *, chat: bool = False) -> list[ModelInfo]:
    """The requested models (completion or chat ones) in request order, without duplicates; 422 otherwise.

    The one place that decides which models answer a request (a study's arm will decide it here).
    """
    if len(model_ids) > state.settings.max_models_per_request:
        raise Unprocessable(f"At most {state.settings.max_models_per_request} models per request")
    chosen: list[ModelInfo] = []
    for model_id in dict.fromkeys(model_ids):
        info = state.models.get(model_id)
        if info is None:
            raise Unprocessable(f"Unknown model id {model_id}")
        if info.is_chat and not chat:
            raise Unprocessable(f"Model {model_id} ({info.name}) is a chat model, not a completion model")
        if chat and not info.is_chat:
            raise Unprocessable(f"Model {model_id} ({info.name}) is not a chat model")
        chosen.append(info)
    return chosen


def check_reference_ids(state: AppState, telemetry: ContextualTelemetry) -> None:
    """422 for a language, trigger type or plugin version that is not seeded (it could not be stored)."""
    ref = state.reference
    if telemetry.language_id not in ref.languages:
        raise Unprocessable(f"Unknown language_id {telemetry.language_id}")
    if telemetry.trigger_type_id not in ref.trigger_types:
        raise Unprocessable(f"Unknown trigger_type_id {telemetry.trigger_type_id}")
    if telemetry.version_id not in ref.plugin_versions:
        raise Unprocessable(f"Unknown version_id {telemetry.version_id}")


def check_size(state: AppState, what: str, size: int) -> None:
    """413 when the text of a request (`what`: "Context", "Chat") is over MAX_CONTEXT_CHARS."""
    if size > state.settings.max_context_chars:
        raise PayloadTooLarge(
            f"{what} of {size} characters is over the limit of {state.settings.max_context_chars}"
        )


def context_size(ctx: CompletionContext) -> int:
    """Characters of the code around the cursor that a request carries."""
    return len(ctx.prefix) + len(ctx.suffix) + len(ctx.selected_text or "")


def _redacted_context(ctx: CompletionContext) -> CompletionContext:
    name = ctx.file_name  # picks the rules for the code (then is redacted itself)
    return ctx.model_copy(
        update={
            "prefix": redact(ctx.prefix, name),
            "suffix": redact(ctx.suffix, name),
            "selected_text": redact(ctx.selected_text, name) if ctx.selected_text else ctx.selected_text,
            # A path can hold a token as well as a line of code can (up to 2,000 of them: CPU work too).
            "file_name": redact(name) if name else name,
            "context_files": [redact(p) for p in ctx.context_files]
            if ctx.context_files
            else ctx.context_files,
        }
    )


async def redact_context(state: AppState, ctx: CompletionContext) -> CompletionContext:
    """The context with every secret replaced by a placeholder, redacted on the CPU pool (never on the
    replica's event loop; cached by content, so cheap when unchanged)."""
    return await state.cpu.run(_redacted_context, ctx)


def _redacted_texts(texts: Sequence[str]) -> list[str]:
    return [redact(t) for t in texts]


async def redact_texts(state: AppState, texts: Sequence[str]) -> list[str]:
    """Free texts (messages, ground truths, stop sequences, answers) redacted on the CPU pool."""
    if not texts:
        return []
    return await state.cpu.run(_redacted_texts, texts)


@dataclass(frozen=True, slots=True)
class Storage:
    """What of one request may be stored: the user's preference, narrowed (never widened) by the request."""

    context: bool
    contextual: bool
    behavioral: bool

    @classmethod
    def of(
        cls,
        preference: dict[str, Any] | None,
        store_context: bool | None,
        store_contextual: bool | None,
        store_behavioral: bool | None,
    ) -> Storage:
        """A per-request store_* flag may only turn off what the preference allows."""
        prefs = Preference.model_validate(preference or {})
        return cls(
            context=prefs.store_context and store_context is not False,
            contextual=prefs.store_contextual_telemetry and store_contextual is not False,
            behavioral=prefs.store_behavioral_telemetry and store_behavioral is not False,
        )


def query_event(
    query_type: Literal["completion", "chat"],
    requester: Requester,
    session: tokens.SessionInfo | None,
    project: tokens.ProjectInfo | None,
    storage: Storage,
    *,
    meta_query_id: uuid.UUID,
    total_ms: int,
    context: CompletionContext,
    contextual: ContextualTelemetry | None,
    behavioral: BehavioralTelemetry,
    **extra: Any,
) -> QueryEvent:
    """The query as it will be stored: (redacted) context and telemetry only where `storage` allows it.

    Every stored free-text field is redacted: the code, the file name and the context file list by
    `redact_context` (before, on the CPU pool: `context` must come from it), and here the file path (a
    path can hold a token as well as a line of code can).
    """
    if contextual is not None and contextual.file_path:
        contextual = contextual.model_copy(update={"file_path": redact(contextual.file_path)})
    return QueryEvent(
        meta_query_id=meta_query_id,
        user_id=requester.user_id,
        session_id=session.session_id if session is not None else None,  # None: an API token's call (/v1)
        project_id=project.project_id if project is not None else None,
        query_type=query_type,
        timestamp=utcnow(),
        total_serving_time_ms=total_ms,
        context=ContextRow(context_id=uuid.uuid4(), **context.model_dump()) if storage.context else None,
        contextual=(
            ContextualRow(contextual_telemetry_id=uuid.uuid4(), **contextual.model_dump())
            if contextual is not None and storage.contextual
            else None
        ),
        behavioral=(
            BehavioralRow(behavioral_telemetry_id=uuid.uuid4(), **behavioral.model_dump())
            if storage.behavioral
            else None
        ),
        **extra,
    )


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """One model's part of a request: its result, or why it failed; how long the ingress waited for it."""

    model: ModelInfo
    result: T | None
    error: str | None
    elapsed_ms: int


async def call_model(model: ModelInfo, ask: Callable[[ModelInfo], Awaitable[T]]) -> Outcome[T]:
    """Ask one model within its time budget (plus a second); any failure becomes an Outcome with an error."""
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(ask(model), timeout=model.time_budget_s + 1.0)
        return Outcome(model, result, None, int((time.perf_counter() - started) * 1000))
    except Exception as exc:  # noqa: BLE001 - one model's failure must not fail the others
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("model %s failed: %s", model.name, reason)
        return Outcome(model, None, reason, int((time.perf_counter() - started) * 1000))


@dataclass
class _InFlight:
    """The model calls of one request, and whether a newer request of its session superseded them."""

    calls: asyncio.Future[Any]
    seq: int = 0  # the request's number in its session (app/services/supersede.py)
    superseded: bool = False


async def fan_out(
    state: AppState,
    models: list[ModelInfo],
    ask: Callable[[ModelInfo], Awaitable[T]],
    *,
    on_outcome: Callable[[Outcome[T]], Awaitable[None]] | None = None,
    supersede: tuple[uuid.UUID, int] | None = None,
) -> list[Outcome[T]]:
    """Ask the models side by side; `on_outcome` hears each as soon as it is done.

    With `supersede=(session_id, seq)`, a newer request of the same session (on any replica) cancels this
    one's calls: 409 Conflict. A client that goes away cancels them too (the cancellation reaches the models).
    """

    async def one(model: ModelInfo) -> Outcome[T]:
        outcome = await call_model(model, ask)
        if on_outcome is not None:
            await on_outcome(outcome)
        return outcome

    calls = asyncio.gather(*(one(m) for m in models))
    if supersede is None:
        return list(await calls)
    session_id, seq = supersede
    cancel_older(state.inflight, session_id, seq)  # ours, on this replica; other replicas hear it from Redis
    mine = _InFlight(calls, seq)
    state.inflight[session_id] = mine
    try:
        return list(await calls)
    except asyncio.CancelledError:
        if mine.superseded:
            raise Conflict("Superseded by a newer completion request of this session") from None
        raise
    finally:
        if state.inflight.get(session_id) is mine:
            del state.inflight[session_id]


class _Owned(BaseModel, Generic[M]):
    """A read-your-writes copy and the user it belongs to."""

    user_id: uuid.UUID
    data: M


class RecentCache(Generic[M]):
    """Answers kept readable in Redis, by their owner, until the telemetry writer has stored them.

    Feedback, reads and follow-up turns that beat the database write work from this copy; the key is
    indexed under its owner, so account deletion finds it.
    """

    def __init__(self, kind: str, model: type[M]) -> None:
        self.kind = kind
        self.envelope = _Owned[model]  # type: ignore[valid-type]

    def key(self, object_id: uuid.UUID) -> str:
        """The Redis key of one object's copy."""
        return f"{tokens.PREFIX}{self.kind}:{object_id}"

    def remember(self, pipe: Pipeline, user_id: uuid.UUID, object_id: uuid.UUID, data: M, ttl_s: int) -> None:
        """Queue the copy (and its owner index entry) on a Redis pipeline."""
        key = self.key(object_id)
        pipe.set(key, self.envelope(user_id=user_id, data=data).model_dump_json(), ex=ttl_s)
        tokens.index_for_user(pipe, user_id, key, ttl_s)

    async def recall(self, redis: Redis, object_id: uuid.UUID) -> tuple[uuid.UUID, M] | None:
        """(owner, data) of a copy still kept, else None."""
        raw = await redis.get(self.key(object_id))
        if raw is None:
            return None
        owned = self.envelope.model_validate_json(raw)
        return owned.user_id, owned.data

    async def recall_own(self, redis: Redis, user_id: uuid.UUID, object_id: uuid.UUID, what: str) -> M | None:
        """The caller's copy, None when none is kept; 403 when it belongs to another user."""
        found = await self.recall(redis, object_id)
        if found is None:
            return None
        if found[0] != user_id:
            raise Forbidden(f"This {what} belongs to another user")
        return found[1]

    async def forget(self, redis: Redis, object_id: uuid.UUID) -> None:
        """Drop a copy (its object was deleted)."""
        await redis.delete(self.key(object_id))


@dataclass(frozen=True, slots=True)
class Kept(Generic[M]):
    """A read-your-writes copy to keep with a request's events."""

    cache: RecentCache[M]
    object_id: uuid.UUID
    data: M


async def commit(state: AppState, user_id: uuid.UUID, events: Sequence[BaseModel], *kept: Kept[Any]) -> None:
    """One Redis round trip: the events for the telemetry writers, and the copies readable until stored."""
    pipe = state.redis.pipeline(transaction=False)
    add_events(pipe, events)
    ttl = state.settings.query_cache_ttl_s
    for k in kept:
        k.cache.remember(pipe, user_id, k.object_id, k.data, ttl)
    await pipe.execute()
