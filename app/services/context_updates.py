"""A multi-file context update request: consent decides the live state's lifetime and whether it is indexed."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.context.consent import project_consents
from app.context.edits import LineChange
from app.context.live_state import Owner, apply_updates
from app.errors import Unprocessable
from app.identity import tokens
from app.infra.state import AppState
from app.schemas.context import MultiFileContextUpdate
from app.services.pipeline import redact_texts


async def live_ttl_ms(state: AppState, project: tokens.ProjectInfo, consent: bool) -> int:
    """How long the live state lives: long with consent, else no longer than the caller's session can.

    Sessions slide up to their cap, so without consent the state may live to the session's cap; when the
    session ends earlier (idle, deactivated, signed out) the SessionReaper drops it then.
    """
    if consent:
        return state.settings.context_live_ttl_s * 1000
    return await tokens.session_lifetime_left_ms(
        state.redis, project.session, state.settings.session_token_ttl_s
    )


async def update_context(
    state: AppState, db: AsyncSession, project: tokens.ProjectInfo, body: MultiFileContextUpdate
) -> dict[str, list[str]]:
    """Apply the request's line changes to the caller's live files (their redacted lines per file);
    consenting projects get them indexed."""
    consent = await project_consents(db, project.project_id)
    await db.rollback()  # nothing to write; do not hold the connection's transaction open
    # A path is stored (Redis, context_chunk, the models' snippets) as redacted as the code: a directory
    # or file can be named after a token. Retrieval looks files up by their redacted paths as well.
    updates: dict[str, list[LineChange]] = {}
    stored_paths = await redact_texts(state, list(body.context_updates))
    for stored, changes in zip(stored_paths, body.context_updates.values(), strict=True):
        if stored in updates:
            raise Unprocessable("context_updates names two files whose paths differ only in a secret")
        updates[stored] = [LineChange(c.change_type, c.start_line, c.end_line, c.new_lines) for c in changes]
    return await apply_updates(
        state.redis,
        Owner(project.project_id, project.user_id),
        updates,
        max_file_chars=state.settings.max_context_chars,
        max_files=state.settings.max_context_files,
        ttl_ms=await live_ttl_ms(state, project, consent),
        # Without consent nothing is marked for the indexer: nothing of it can reach PostgreSQL.
        mark_dirty=consent,
        user_quota_bytes=state.settings.context_user_quota_bytes,
        usage_ttl_ms=state.settings.context_live_ttl_s * 1000,
        cpu=state.cpu,
    )
