"""Telemetry events as the ingress would append them, for tests and the ingest benchmark."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from app.telemetry.events import (
    BehavioralRow,
    ContextRow,
    ContextualRow,
    FeedbackEvent,
    GenerationEvent,
    QueryEvent,
)
from db.engine import plain_url
from db.tables import utcnow


async def make_user_and_models(
    database_url: str, model_names: tuple[str, ...] = ("events-a", "events-b")
) -> tuple[uuid.UUID, list[int]]:
    """A fresh user row and model rows (upserted by name) that events can point at."""
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        user_id = uuid.uuid4()
        await conn.execute(
            'INSERT INTO "user" (user_id, email, name, config_id, preference, is_oauth_signup, verified, is_admin)'
            " VALUES ($1, $2, $3, 1, $4::jsonb, false, false, false)",
            user_id,
            f"events-{user_id.hex[:12]}@example.org",
            "Events",
            "{}",
        )
        ids = []
        for name in model_names:
            ids.append(
                await conn.fetchval(
                    "INSERT INTO model_name (model_name, model_source, family, is_instruction_tuned, is_default, is_active,"
                    " registry_entry) VALUES ($1, 'x', 'code4me', false, false, true, '{}'::jsonb)"
                    " ON CONFLICT (model_name) DO UPDATE SET is_active = true RETURNING model_id",
                    name,
                )
            )
        return user_id, ids
    finally:
        await conn.close()


def query_events(
    user_id: uuid.UUID, model_ids: list[int], *, language_id: int = 1, feedback: bool = True
) -> list[Any]:
    """One completion query with every model's generation and (optionally) an accepting feedback: its events in order."""
    qid = uuid.uuid4()
    events: list[Any] = [
        QueryEvent(
            meta_query_id=qid,
            user_id=user_id,
            query_type="completion",
            timestamp=utcnow(),
            total_serving_time_ms=42,
            context=ContextRow(
                context_id=uuid.uuid4(),
                prefix="def f(x):\n    return ",
                suffix="\n",
                file_name="f.py",
                context_files=["*"],
            ),
            contextual=ContextualRow(
                contextual_telemetry_id=uuid.uuid4(), version_id=1, trigger_type_id=1, language_id=language_id
            ),
            behavioral=BehavioralRow(behavioral_telemetry_id=uuid.uuid4(), typing_speed=3.0),
            stop_sequences=["\n"],
        )
    ]
    for m in model_ids:
        events.append(
            GenerationEvent(
                meta_query_id=qid,
                user_id=user_id,
                model_id=m,
                completion="x + 1",
                generation_time_ms=30,
                confidence=0.4,
                token_logprobs=[-0.5, -1.2],
                created_at=utcnow(),
            )
        )
    if feedback:
        events.append(
            FeedbackEvent(
                event_id=uuid.uuid4(),
                user_id=user_id,
                meta_query_id=qid,
                model_id=model_ids[0],
                was_accepted=True,
                ground_truth="x + 1",
                timestamp=utcnow(),
            )
        )
    return events


async def stored_counts(database_url: str, user_id: uuid.UUID) -> dict[str, int]:
    """Rows of one user's queries: queries, contexts, generations, accepted generations, ground truths."""
    conn = await asyncpg.connect(plain_url(database_url))
    try:
        row = await conn.fetchrow(
            """
            SELECT
              (SELECT count(*) FROM meta_query WHERE user_id = $1) AS queries,
              (SELECT count(*) FROM meta_query m JOIN context c USING (context_id) WHERE m.user_id = $1) AS contexts,
              (SELECT count(*) FROM completion_query c JOIN meta_query m USING (meta_query_id) WHERE m.user_id = $1) AS completion_queries,
              (SELECT count(*) FROM had_generation g JOIN meta_query m USING (meta_query_id) WHERE m.user_id = $1) AS generations,
              (SELECT count(*) FROM had_generation g JOIN meta_query m USING (meta_query_id) WHERE m.user_id = $1 AND g.was_accepted) AS accepted,
              (SELECT count(*) FROM ground_truth t JOIN meta_query m USING (meta_query_id) WHERE m.user_id = $1) AS ground_truths
            """,
            user_id,
        )
        return dict(row)
    finally:
        await conn.close()
