"""Retention: delete each user's data older than their `data_retention_days` preference, and audit records
older than the platform's `AUDIT_RETENTION_DAYS`.

Swept per user: queries (with context, telemetry, generations, ground truths), chat messages, chats
left empty, and ended sessions. A preference of null keeps everything; a user whose stored preference
lacks the key gets the schema default. Anonymised rows of deleted accounts have no owner and are not swept.
Audit records follow the platform's policy, not their subject's: they go through the table's own purge path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, Numeric, Subquery, and_, case, delete, exists, func, literal, not_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.schemas.user import Preference
from app.services import audit
from app.services.account_deletion import delete_queries
from db.tables import Chat, ChatMessage, MetaQuery, Session, User

KEY = "data_retention_days"


@dataclass(frozen=True)
class RetentionResult:
    """How many rows of each kind one sweep deleted."""

    queries: int
    chat_messages: int
    chats: int
    sessions: int
    audit_events: int = 0


def _cutoffs(now: datetime) -> Subquery:
    """(user_id, cutoff) for every user with a retention period; rows older than cutoff go."""
    pref = col(User.preference)
    default = Preference.model_fields[KEY].default
    days = case(
        (not_(pref.has_key(KEY)), literal(default, Integer)),  # type: ignore[attr-defined]
        (func.jsonb_typeof(pref[KEY]) == "number", pref[KEY].astext.cast(Numeric).cast(Integer)),
        else_=None,
    )
    cutoff = literal(now) - func.make_interval(0, 0, 0, days)
    return (
        select(col(User.user_id).label("user_id"), cutoff.label("cutoff"))
        .where(days.is_not(None))
        .subquery("retention")
    )


async def delete_expired_data(
    db: AsyncSession, now: datetime, *, audit_retention_days: int | None = None
) -> RetentionResult:
    """Delete what is older than each user's retention period at `now`, and (when given) audit records older
    than `audit_retention_days`, in one transaction."""
    r = _cutoffs(now)
    queries = await delete_queries(
        db, exists().where(and_(r.c.user_id == col(MetaQuery.user_id), col(MetaQuery.timestamp) < r.c.cutoff))
    )
    of_user = and_(col(Chat.chat_id) == col(ChatMessage.chat_id), r.c.user_id == col(Chat.user_id))
    messages = await db.execute(
        delete(ChatMessage).where(exists().where(of_user, col(ChatMessage.created_at) < r.c.cutoff))
    )
    left_empty = and_(
        exists().where(r.c.user_id == col(Chat.user_id), col(Chat.created_at) < r.c.cutoff),
        ~exists().where(col(ChatMessage.chat_id) == col(Chat.chat_id)),
    )
    chats = await db.execute(delete(Chat).where(left_empty))
    sessions = await db.execute(
        delete(Session).where(
            exists().where(
                r.c.user_id == col(Session.user_id),
                col(Session.end_time).is_not(None),
                col(Session.end_time) < r.c.cutoff,
            )
        )
    )
    audited = 0
    if audit_retention_days is not None:
        audited = await audit.purge(db, now - timedelta(days=audit_retention_days))
    await db.commit()
    return RetentionResult(
        queries=queries,
        chat_messages=messages.rowcount or 0,  # type: ignore[attr-defined]
        chats=chats.rowcount or 0,  # type: ignore[attr-defined]
        sessions=sessions.rowcount or 0,  # type: ignore[attr-defined]
        audit_events=audited,
    )
