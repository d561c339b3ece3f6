"""Completion requests fanned out to models side by side, stored with their telemetry; feedback."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.context.retrieval import Candidate, snippets_for, within_budget
from app.errors import Forbidden, NotFound, PayloadTooLarge
from app.identity import tokens
from app.infra.encryption import generation_aad
from app.infra.state import AppState, ModelInfo
from app.protocol import CompletionCall, CompletionResult, Snippet
from app.redaction import redact
from app.schemas.completion import (
    CompletionData,
    CompletionFailure,
    CompletionItem,
    CompletionRequest,
    FeedbackRequest,
)
from app.services.pipeline import (
    Kept,
    Outcome,
    RecentCache,
    Requester,
    Storage,
    check_reference_ids,
    check_size,
    commit,
    context_size,
    fan_out,
    query_event,
    redact_context,
    redact_texts,
    resolve_models,
)
from app.services.supersede import announce
from app.telemetry.events import FeedbackEvent, GenerationEvent
from app.telemetry.stream import publish
from db.tables import Generation, MetaQuery, User, utcnow

MANUAL_TRIGGER_ID = 1
# Completion answers, readable by their owner until the writer has stored them.
RECENT = RecentCache("query", CompletionData)

Slot = CompletionItem | CompletionFailure
# Called with (query id, model, its slot) as soon as that model has answered (the WebSocket sends it at once).
OnResult = Callable[[uuid.UUID, ModelInfo, Slot], Awaitable[None]]


def check_request(state: AppState, body: CompletionRequest) -> None:
    """Refuse what cannot be stored before anything is stored: unknown reference ids, oversized context."""
    check_reference_ids(state, body.contextual_telemetry)
    check_size(state, "Context", context_size(body.context))


def model_call(
    body: CompletionRequest, snippets: tuple[Snippet, ...] = (), max_new_tokens: int | None = None
) -> CompletionCall:
    """What a model deployment receives: the code around the cursor and how to stop."""
    ctx = body.context
    rest_of_line = ctx.suffix.split("\n", 1)[0]
    # Mid-line or automatic triggers want the rest of one line; a manual trigger at a line end may get more.
    single_line = bool(rest_of_line.strip()) or body.contextual_telemetry.trigger_type_id != MANUAL_TRIGGER_ID
    return CompletionCall(
        prefix=ctx.prefix,
        suffix=ctx.suffix,
        file_name=ctx.file_name or body.contextual_telemetry.file_path or "",
        context_snippets=snippets,
        stop_sequences=tuple(s for s in body.stop_sequences if s),
        single_line=single_line,
        max_new_tokens=max_new_tokens,
    )


def fit_client_snippets(snippets: Sequence[Snippet], budget_chars: int) -> list[Snippet]:
    """A client's own snippets (Tabby's declarations and related code), best first: redacted like the stored
    context, duplicates dropped, cut to the snippet budget as retrieved ones are (CPU work: run it on the
    CPU pool)."""
    seen: set[tuple[str, str]] = set()
    candidates: list[Candidate] = []
    next_line: dict[str, int] = {}
    for snippet in snippets:
        path, text = redact(snippet.path), redact(snippet.text, snippet.path)
        if (path, text) in seen or not text.strip():
            continue
        seen.add((path, text))
        # Where in its file a snippet sits is unknown: each gets lines of its own, so none cuts another.
        start = next_line.get(path, 0)
        next_line[path] = start + text.count("\n") + 1
        candidates.append(Candidate(path, start, next_line[path], text, 0.0))
    return within_budget(candidates, budget_chars)


def generation_event(
    meta_query_id: uuid.UUID, outcome: Outcome[CompletionResult], user_id: uuid.UUID | None = None
) -> GenerationEvent:
    """One model's result as a telemetry event."""
    res = outcome.result
    return GenerationEvent(
        meta_query_id=meta_query_id,
        user_id=user_id,
        model_id=outcome.model.model_id,
        completion=res.completion if res is not None else "",
        generation_time_ms=res.generation_time_ms if res is not None else outcome.elapsed_ms,
        confidence=res.confidence if res is not None else None,
        token_logprobs=list(res.token_logprobs) if res is not None else None,
        error=outcome.error,
        created_at=utcnow(),
    )


@dataclass(frozen=True)
class Answered:
    """A completion request's answer, with the milliseconds of each stage (for `Server-Timing`)."""

    data: CompletionData
    # prepare (checks, redaction, snippets), models (the side-by-side calls), events (the telemetry round
    # trip), and replica (the slowest model replica's own time) when a model answered.
    timings: dict[str, float] = field(default_factory=dict)
    # Each answering model's result by model id (token log-probs, why it stopped: the OpenAI route's fields).
    results: dict[int, CompletionResult] = field(default_factory=dict)


async def request_completion(
    state: AppState,
    user: Requester,
    session: tokens.SessionInfo | None,
    project: tokens.ProjectInfo | None,
    body: CompletionRequest,
    on_result: OnResult | None = None,
    *,
    client_snippets: Sequence[Snippet] | None = None,
    max_new_tokens: int | None = None,
) -> Answered:
    """Ask every requested model concurrently, queue the query and generations for storage, answer all slots.

    A plugin call has a session and a project (the snippets come from the project's files, a newer request
    of the session supersedes it); a call with an API token (/v1) has neither and may bring its own
    `client_snippets` (redacted and cut to the snippet budget here, like retrieved ones) and a lower
    `max_new_tokens` than the models' own (OpenAI's `max_tokens`).
    """
    began = time.perf_counter()
    models = resolve_models(state, body.model_ids)
    check_request(state, body)
    redacted = body.model_copy(update={"context": await redact_context(state, body.context)})
    # Secrets never reach storage; whether the models see them is a setting (default: they do not).
    sent = redacted if state.settings.redact_model_input else body
    storage = Storage.of(
        user.preference,
        body.store_context,
        body.store_contextual_telemetry,
        body.store_behavioral_telemetry,
    )
    budget = state.settings.context_snippet_budget_chars
    supersede: tuple[uuid.UUID, int] | None = None
    if session is None or project is None:
        # Redacting and fitting a client's snippets is CPU work: on the pool.
        fitted = await state.cpu.run(fit_client_snippets, client_snippets or (), budget)
        call = model_call(sent, tuple(fitted), max_new_tokens)
    else:
        # Numbered in its session and announced to every replica (supersedes older requests) meanwhile.
        announced = asyncio.create_task(announce(state.redis, session.session_id))
        # The project's other files most relevant to the cursor (from the redacted live state or the index).
        snippets = snippets_for(
            state,
            project.project_id,
            body.contextual_telemetry.file_path or body.context.file_name or "",
            sent.context.prefix,
            sent.context.suffix,
            body.context.context_files,
            budget,
            storage.context,
            user_id=user.user_id,
        )
        try:
            call = model_call(sent, tuple(await snippets), max_new_tokens)
        finally:
            supersede = (session.session_id, await announced)
    meta_query_id = uuid.uuid4()
    started = time.perf_counter()

    async def ask(model: ModelInfo) -> CompletionResult:
        return await state.gateway.complete(model.name, call)

    async def forward(outcome: Outcome[CompletionResult]) -> None:
        assert on_result is not None
        event = generation_event(meta_query_id, outcome)
        slot = _slot(event, outcome.model.name, event.completion)
        await on_result(meta_query_id, outcome.model, slot)

    outcomes = await fan_out(
        state,
        models,
        ask,
        on_outcome=forward if on_result else None,
        supersede=supersede,
    )
    answered = time.perf_counter()
    total_ms = int((answered - started) * 1000)

    generations = [generation_event(meta_query_id, o, user.user_id) for o in outcomes]
    data = CompletionData(
        meta_query_id=meta_query_id,
        completions=[
            _slot(g, o.model.name, g.completion) for g, o in zip(generations, outcomes, strict=True)
        ],
    )
    query = query_event(
        "completion",
        user,
        session,
        project,
        storage,
        meta_query_id=meta_query_id,
        total_ms=total_ms,
        context=redacted.context,
        contextual=body.contextual_telemetry,
        behavioral=body.behavioral_telemetry,
        stop_sequences=await redact_texts(state, call.stop_sequences),
    )
    await commit(state, user.user_id, [query, *generations], Kept(RECENT, meta_query_id, data))
    done = time.perf_counter()
    timings = {
        "prepare": (started - began) * 1000,
        "models": (answered - started) * 1000,
        "events": (done - answered) * 1000,
    }
    replica = [
        o.result.replica_ms for o in outcomes if o.result is not None and o.result.replica_ms is not None
    ]
    if replica:
        timings["replica"] = max(replica)
    results = {o.model.model_id: o.result for o in outcomes if o.result is not None and not o.error}
    return Answered(data, timings, results)


def _slot(generation: Generation | GenerationEvent, model_name: str, completion: str) -> Slot:
    """The answer slot of one generation, its text `completion` (a failure keeps the plugin's required fields)."""
    if generation.error:
        return CompletionFailure(model_id=generation.model_id, model_name=model_name)
    return CompletionItem(
        model_id=generation.model_id,
        model_name=model_name,
        completion=completion,
        generation_time=generation.generation_time_ms,
        confidence=generation.confidence or 0.0,
    )


async def _cached(state: AppState, user: Requester, meta_query_id: uuid.UUID) -> CompletionData | None:
    return await RECENT.recall_own(state.redis, user.user_id, meta_query_id, "completion query")


async def _own_query(db: AsyncSession, user: Requester, meta_query_id: uuid.UUID) -> MetaQuery:
    meta = await db.get(MetaQuery, meta_query_id)
    if meta is None or meta.query_type != "completion":
        raise NotFound("Completion query not found")
    if meta.user_id != user.user_id:
        raise Forbidden("This completion query belongs to another user")
    return meta


async def query_models(
    state: AppState, db: AsyncSession, user: Requester, meta_query_id: uuid.UUID
) -> list[int]:
    """The ids of the models that answered one of the caller's completion queries, ascending (404/403 else).

    The query is read from Redis first, so what beats the database write still finds it.
    """
    cached = await _cached(state, user, meta_query_id)
    if cached is not None:
        return sorted(slot.model_id for slot in cached.completions)
    await _own_query(db, user, meta_query_id)
    rows = await db.execute(
        select(col(Generation.model_id)).where(col(Generation.meta_query_id) == meta_query_id)
    )
    return sorted(int(m) for m in rows.scalars())


async def feedback(state: AppState, db: AsyncSession, user: Requester, body: FeedbackRequest) -> None:
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
        ground_truth=(await redact_texts(state, [body.ground_truth]))[0]
        if body.ground_truth is not None
        else None,
        timestamp=utcnow(),
    )
    await publish(state.redis, [event])


async def get_completion(
    state: AppState, db: AsyncSession, user: User, meta_query_id: uuid.UUID
) -> CompletionData:
    """A completion query with every model's slot (from Redis until stored); only its owner may read it."""
    cached = await _cached(state, user, meta_query_id)
    if cached is not None:
        return cached
    await _own_query(db, user, meta_query_id)
    rows = (
        await db.execute(select(Generation).where(Generation.meta_query_id == meta_query_id))  # type: ignore[arg-type]
    ).scalars()
    slots = [
        _slot(
            g,
            state.models[g.model_id].name if g.model_id in state.models else str(g.model_id),
            state.keyring.open(g.completion, generation_aad(g.meta_query_id, g.model_id)),
        )
        for g in rows
    ]
    return CompletionData(meta_query_id=meta_query_id, completions=slots)
