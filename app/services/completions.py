"""Completion requests fanned out to models side by side, stored with their telemetry; feedback."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import tokens
from app.context.retrieval import snippets_for
from app.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from app.redaction import redact
from app.schemas.completion import (
    CompletionContext,
    CompletionData,
    CompletionFailure,
    CompletionItem,
    CompletionRequest,
    CompletionResponse,
    FeedbackRequest,
)
from app.schemas.user import Preference
from app.state import AppState, ModelInfo
from app.supersede import announce, cancel_older
from app.telemetry.events import (
    BehavioralRow,
    ContextRow,
    ContextualRow,
    FeedbackEvent,
    GenerationEvent,
    QueryEvent,
)
from app.telemetry.stream import add_events, publish
from db.tables import Generation, MetaQuery, User, utcnow

log = logging.getLogger(__name__)
MANUAL_TRIGGER_ID = 1


class Requester(Protocol):
    """Who asks for a completion: a user row, or the completion path's cached copy of it (deps.Caller)."""

    @property
    def user_id(self) -> uuid.UUID: ...

    @property
    def preference(self) -> dict[str, Any] | None: ...


def resolve_models(state: AppState, model_ids: list[int], *, chat: bool = False) -> list[ModelInfo]:
    """The requested models (completion or chat ones) in request order, without duplicates; 422 otherwise."""
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


def check_request(state: AppState, body: CompletionRequest) -> None:
    """Refuse what cannot be stored before anything is stored: unknown reference ids, oversized context."""
    ct = body.contextual_telemetry
    ref = state.reference
    if ct.language_id not in ref.languages:
        raise Unprocessable(f"Unknown language_id {ct.language_id}")
    if ct.trigger_type_id not in ref.trigger_types:
        raise Unprocessable(f"Unknown trigger_type_id {ct.trigger_type_id}")
    if ct.version_id not in ref.plugin_versions:
        raise Unprocessable(f"Unknown version_id {ct.version_id}")
    ctx = body.context
    size = len(ctx.prefix) + len(ctx.suffix) + len(ctx.selected_text or "")
    if size > state.settings.max_context_chars:
        raise PayloadTooLarge(
            f"Context of {size} characters is over the limit of {state.settings.max_context_chars}"
        )


def redact_context(ctx: CompletionContext) -> CompletionContext:
    """The context with every secret replaced by a placeholder (cached by content, so cheap when unchanged)."""
    name = ctx.file_name
    return ctx.model_copy(
        update={
            "prefix": redact(ctx.prefix, name),
            "suffix": redact(ctx.suffix, name),
            "selected_text": redact(ctx.selected_text, name) if ctx.selected_text else ctx.selected_text,
        }
    )


def model_payload(body: CompletionRequest) -> dict[str, Any]:
    """What a model deployment receives: the code around the cursor and how to stop."""
    ctx = body.context
    rest_of_line = ctx.suffix.split("\n", 1)[0]
    # Mid-line or automatic triggers want the rest of one line; a manual trigger at a line end may get more.
    single_line = bool(rest_of_line.strip()) or body.contextual_telemetry.trigger_type_id != MANUAL_TRIGGER_ID
    return {
        "prefix": ctx.prefix,
        "suffix": ctx.suffix,
        "file_name": ctx.file_name or body.contextual_telemetry.file_path or "",
        "context_snippets": [],
        "stop_sequences": [s for s in body.stop_sequences if s],
        "single_line": single_line,
    }


async def _call_model(state: AppState, model: ModelInfo, payload: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(
            state.gateway.complete(model.name, payload), timeout=model.time_budget_s + 1.0
        )
        return {"ok": True, **result}
    except Exception as exc:  # noqa: BLE001 - one model's failure must not fail the others
        reason = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        log.warning("model %s failed: %s", model.name, reason)
        return {
            "ok": False,
            "error": reason,
            "generation_time_ms": int((time.perf_counter() - started) * 1000),
        }


@dataclass
class _InFlight:
    """The model calls of one completion request, and whether a newer request superseded them."""

    calls: asyncio.Future[list[dict[str, Any]]]
    seq: int = 0  # the request's number in its session (app/supersede.py)
    superseded: bool = False


# Called with (query id, model, its slot) as soon as that model has answered (the WebSocket sends it at once).
OnResult = Callable[[uuid.UUID, ModelInfo, "CompletionItem | CompletionFailure"], Awaitable[None]]


async def _run_superseding(
    state: AppState,
    session_id: uuid.UUID,
    seq: int,
    models: list[ModelInfo],
    payload: dict[str, Any],
    on_result: Callable[[ModelInfo, dict[str, Any]], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """Call the models side by side; a newer request of the same session (on any replica) cancels this one's."""
    cancel_older(
        state.inflight, session_id, seq
    )  # ours, on this replica; other replicas hear of `seq` from Redis

    async def one(model: ModelInfo) -> dict[str, Any]:
        result = await _call_model(state, model, payload)
        if on_result is not None:
            await on_result(model, result)
        return result

    mine = _InFlight(asyncio.gather(*(one(m) for m in models)), seq)
    state.inflight[session_id] = mine
    try:
        return await mine.calls
    except asyncio.CancelledError:
        if mine.superseded:
            raise Conflict("Superseded by a newer completion request of this session") from None
        raise  # the client went away: let the cancellation reach the model deployments
    finally:
        if state.inflight.get(session_id) is mine:
            del state.inflight[session_id]


def _stored(flag: bool | None, preference: bool) -> bool:
    """A per-request store_* flag may only narrow what the user's preference allows."""
    return preference and flag is not False


def query_event(
    user: Requester,
    prefs: Preference,
    session: tokens.SessionInfo,
    project: tokens.ProjectInfo,
    body: CompletionRequest,
    meta_query_id: uuid.UUID,
    total_ms: int,
) -> QueryEvent:
    """The query as it will be stored: context and telemetry only where the user's preferences allow it."""
    ctx = body.context
    context = None
    if _stored(body.store_context, prefs.store_context):
        context = ContextRow(
            context_id=uuid.uuid4(),
            prefix=ctx.prefix,
            suffix=ctx.suffix,
            file_name=ctx.file_name,
            selected_text=ctx.selected_text,
            context_files=ctx.context_files,
        )
    contextual = None
    if _stored(body.store_contextual_telemetry, prefs.store_contextual_telemetry):
        contextual = ContextualRow(
            contextual_telemetry_id=uuid.uuid4(), **body.contextual_telemetry.model_dump()
        )
    behavioral = None
    if _stored(body.store_behavioral_telemetry, prefs.store_behavioral_telemetry):
        behavioral = BehavioralRow(
            behavioral_telemetry_id=uuid.uuid4(), **body.behavioral_telemetry.model_dump()
        )
    return QueryEvent(
        meta_query_id=meta_query_id,
        user_id=user.user_id,
        session_id=session.session_id,
        project_id=project.project_id,
        query_type="completion",
        timestamp=utcnow(),
        total_serving_time_ms=total_ms,
        context=context,
        contextual=contextual,
        behavioral=behavioral,
        stop_sequences=[s for s in body.stop_sequences if s],
    )


def generation_event(
    meta_query_id: uuid.UUID, model: ModelInfo, res: dict[str, Any], user_id: uuid.UUID | None = None
) -> GenerationEvent:
    """One model's result as a telemetry event."""
    return GenerationEvent(
        meta_query_id=meta_query_id,
        user_id=user_id,
        model_id=model.model_id,
        completion=res["completion"] if res["ok"] else "",
        generation_time_ms=int(res["generation_time_ms"]),
        confidence=float(res["confidence"]) if res["ok"] else None,
        token_logprobs=[float(x) for x in res.get("token_logprobs", [])] if res["ok"] else None,
        error=None if res["ok"] else res["error"],
        created_at=utcnow(),
    )


def _query_key(meta_query_id: uuid.UUID) -> str:
    return f"{tokens.PREFIX}query:{meta_query_id}"


async def request_completion(
    state: AppState,
    user: Requester,
    session: tokens.SessionInfo,
    project: tokens.ProjectInfo,
    body: CompletionRequest,
    on_result: OnResult | None = None,
    timings: dict[str, float] | None = None,
) -> CompletionResponse:
    """Ask every requested model concurrently, queue the query and generations for storage, answer all slots.

    `timings`, when given, receives the milliseconds of each stage (prepare, models, events).
    """
    began = time.perf_counter()
    models = resolve_models(state, body.model_ids)
    check_request(state, body)
    redacted = body.model_copy(update={"context": redact_context(body.context)})
    # Secrets never reach storage; whether the models see them is a setting (default: they do not).
    payload = model_payload(redacted if state.settings.redact_model_input else body)
    prefs = Preference.model_validate(user.preference or {})
    # Numbered in its session and announced to every replica (supersedes older requests) meanwhile.
    announced = asyncio.create_task(announce(state.redis, session.session_id))
    # The project's other files most relevant to the cursor (from the redacted live state or the index).
    snippets = snippets_for(
        state,
        project.project_id,
        body.contextual_telemetry.file_path or body.context.file_name or "",
        payload["prefix"],
        payload["suffix"],
        body.context.context_files,
        state.settings.context_snippet_budget_chars,
        _stored(body.store_context, prefs.store_context),
        user_id=user.user_id,
    )
    try:
        payload["context_snippets"] = await snippets
    finally:
        seq = await announced
    meta_query_id = uuid.uuid4()
    started = time.perf_counter()

    async def forward(model: ModelInfo, result: dict[str, Any]) -> None:
        assert on_result is not None
        await on_result(
            meta_query_id, model, _slot(generation_event(meta_query_id, model, result), model.name)
        )

    results = await _run_superseding(
        state, session.session_id, seq, models, payload, forward if on_result else None
    )
    answered = time.perf_counter()
    total_ms = int((answered - started) * 1000)

    generations = [
        generation_event(meta_query_id, m, r, user.user_id) for m, r in zip(models, results, strict=True)
    ]
    slots = [_slot(g, m.name) for g, m in zip(generations, models, strict=True)]
    data = CompletionData(meta_query_id=meta_query_id, completions=slots)
    # One round trip: the events for the writers, and the answer kept readable until they are written.
    pipe = state.redis.pipeline(transaction=False)
    add_events(
        pipe, [query_event(user, prefs, session, project, redacted, meta_query_id, total_ms), *generations]
    )
    ttl = state.settings.query_cache_ttl_s
    pipe.set(
        _query_key(meta_query_id), _CachedQuery(user_id=user.user_id, data=data).model_dump_json(), ex=ttl
    )
    tokens.index_for_user(pipe, user.user_id, _query_key(meta_query_id), ttl)  # so account deletion finds it
    await pipe.execute()
    if timings is not None:
        done = time.perf_counter()
        timings.update(
            prepare=(started - began) * 1000,
            models=(answered - started) * 1000,
            events=(done - answered) * 1000,
        )
        # What the model replica reported of its own time (for the slowest model): queue + generation.
        replica = [float(r["replica_ms"]) for r in results if r.get("ok") and "replica_ms" in r]
        if replica:
            timings["replica"] = max(replica)
    return CompletionResponse(message="Completions generated successfully", data=data)


class _CachedQuery(BaseModel):
    """A completion answer kept in Redis: feedback and reads work before the writer stores it."""

    user_id: uuid.UUID
    data: CompletionData


def _slot(generation: Generation | GenerationEvent, model_name: str) -> CompletionItem | CompletionFailure:
    """The answer slot of one generation (a failure keeps the plugin's required fields)."""
    if generation.error:
        return CompletionFailure(model_id=generation.model_id, model_name=model_name)
    return CompletionItem(
        model_id=generation.model_id,
        model_name=model_name,
        completion=generation.completion,
        generation_time=generation.generation_time_ms,
        confidence=generation.confidence or 0.0,
    )


async def _cached(state: AppState, user: User, meta_query_id: uuid.UUID) -> CompletionData | None:
    raw = await state.redis.get(_query_key(meta_query_id))
    if raw is None:
        return None
    cached = _CachedQuery.model_validate_json(raw)
    if cached.user_id != user.user_id:
        raise Forbidden("This completion query belongs to another user")
    return cached.data


async def _own_query(db: AsyncSession, user: User, meta_query_id: uuid.UUID) -> MetaQuery:
    meta = await db.get(MetaQuery, meta_query_id)
    if meta is None or meta.query_type != "completion":
        raise NotFound("Completion query not found")
    if meta.user_id != user.user_id:
        raise Forbidden("This completion query belongs to another user")
    return meta


async def feedback(state: AppState, db: AsyncSession, user: User, body: FeedbackRequest) -> None:
    """Queue acceptance and (optionally) the ground truth for one model's generation.

    The query is checked in Redis first, so feedback that beats the database write still succeeds.
    """
    if body.ground_truth is not None and len(body.ground_truth) > state.settings.max_context_chars:
        raise PayloadTooLarge("Ground truth is over the context size limit")
    cached = await _cached(state, user, body.meta_query_id)
    if cached is not None:
        if all(slot.model_id != body.model_id for slot in cached.completions):
            raise NotFound(f"No generation of model {body.model_id} for this query")
    else:
        await _own_query(db, user, body.meta_query_id)
        if await db.get(Generation, (body.meta_query_id, body.model_id)) is None:
            raise NotFound(f"No generation of model {body.model_id} for this query")
    event = FeedbackEvent(
        event_id=uuid.uuid4(),
        user_id=user.user_id,
        meta_query_id=body.meta_query_id,
        model_id=body.model_id,
        was_accepted=body.was_accepted,
        ground_truth=redact(body.ground_truth) if body.ground_truth is not None else None,
        timestamp=utcnow(),
    )
    await publish(state.redis, [event])


async def get_completion(
    state: AppState, db: AsyncSession, user: User, meta_query_id: uuid.UUID
) -> CompletionResponse:
    """A completion query with every model's slot (from Redis until stored); only its owner may read it."""
    cached = await _cached(state, user, meta_query_id)
    if cached is not None:
        return CompletionResponse(message="Completion retrieved successfully", data=cached)
    await _own_query(db, user, meta_query_id)
    rows = (
        await db.execute(select(Generation).where(Generation.meta_query_id == meta_query_id))  # type: ignore[arg-type]
    ).scalars()
    slots = [
        _slot(g, state.models[g.model_id].name if g.model_id in state.models else str(g.model_id))
        for g in rows
    ]
    return CompletionResponse(
        message="Completion retrieved successfully",
        data=CompletionData(meta_query_id=meta_query_id, completions=slots),
    )
