"""The audit log: `record` adds one record of an audited action to the caller's transaction; admins read them.

Records go into the transaction of the action they describe, so an action is never committed without its
record and a rolled-back action leaves none. Actions without a PostgreSQL transaction of their own (a
sign-in, a failed sign-in, an export, a sign-out) record and commit in the request's database session before
the answer: each of them reads or writes PostgreSQL anyway, none is on the completion path, and the record is
durable when the client gets its answer (the telemetry stream's writer would make it eventual, and an outage
of the writer would let an action through without its record).

The table is append-only in PostgreSQL (migration 0008); the retention purge is `purge` below. A record's
detail holds identifiers, numbers, flags and enumerated words only (`check_detail`): never a secret, an
email address, a name or other free text.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from db.tables import AuditEvent


class AuditAction(StrEnum):
    """Every audited action; the stored `action` is one of these values."""

    SIGN_IN = "auth.sign_in"
    SIGN_IN_FAILED = "auth.sign_in_failed"
    SESSION_END = "auth.session_end"  # a deactivate that ended the session: its session and project tokens
    PASSWORD_RESET = "auth.password_reset"  # every token of the account ends
    API_TOKEN_CREATE = "auth.api_token_create"
    API_TOKEN_REVOKE = "auth.api_token_revoke"
    USER_UPDATE = "user.update"
    USER_EXPORT = "user.export"
    USER_DELETE = "user.delete"
    PROJECT_CREATE = "project.create"
    PROJECT_DELETE = "project.delete"
    PROJECT_INVITE = "project.invite"
    PROJECT_INVITATION_REVOKE = "project.invitation_revoke"
    PROJECT_JOIN = "project.join"
    ADMIN_GRANT = "admin.grant"
    ADMIN_REVOKE = "admin.revoke"
    AUDIT_READ = "admin.audit_read"
    MODEL_REGISTRY_CHANGE = "config.model_registry"


@dataclass(frozen=True)
class Target:
    """What an action was done to: a kind (`user`, `project`, `model`) and its id."""

    type: str
    id: str


def user_target(user_id: uuid.UUID) -> Target:
    """A user account as the target."""
    return Target("user", str(user_id))


def project_target(project_id: uuid.UUID) -> Target:
    """A project as the target."""
    return Target("project", str(project_id))


# Identifiers, numbers written as text, enumerated words, UUIDs: no spaces, no '@', nothing long.
_WORD = re.compile(r"[A-Za-z0-9_.:-]{0,64}")
MAX_DETAIL_KEYS = 8
MAX_LIST_ITEMS = 16
MAX_ADDRESS_CHARS = 64


def _word(value: object) -> bool:
    return isinstance(value, str) and _WORD.fullmatch(value) is not None


def check_detail(detail: Mapping[str, Any]) -> dict[str, Any]:
    """The detail as stored; ValueError for anything but a few flags, numbers and words (lists of words).

    This is what keeps secrets and free text out of the audit log: a password, a token, an email address
    or a name cannot pass as a word.
    """
    if len(detail) > MAX_DETAIL_KEYS:
        raise ValueError(f"an audit detail has at most {MAX_DETAIL_KEYS} keys")
    out: dict[str, Any] = {}
    for key, value in detail.items():
        if not _word(key):
            raise ValueError("audit detail keys are words")
        ok = (
            value is None
            or isinstance(value, bool | int)
            or _word(value)
            or (
                isinstance(value, list | tuple)
                and len(value) <= MAX_LIST_ITEMS
                and all(_word(v) for v in value)
            )
        )
        if not ok:
            raise ValueError(f"audit detail {key!r} must be a flag, a number, a word or a list of words")
        out[key] = list(value) if isinstance(value, list | tuple) else value
    return out


async def record(
    db: AsyncSession,
    action: AuditAction,
    *,
    actor: uuid.UUID | None,
    address: str | None,
    target: Target | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Add one audit record to `db`'s transaction: committed with the action, or rolled back with it.

    `actor` is the user who acted (None for the system or the command line), `address` the client address
    of app/infra/client_address.py (None off the network).
    """
    db.add(
        AuditEvent(
            actor_id=actor,
            action=AuditAction(action).value,
            target_type=target.type if target else None,
            target_id=target.id if target else None,
            client_address=address[:MAX_ADDRESS_CHARS] if address else None,
            detail=check_detail(detail or {}),
        )
    )


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class AuditFilter:
    """What an admin asks for: any of actor, action and a time range [since, until)."""

    actor: uuid.UUID | None = None
    action: AuditAction | None = None
    since: datetime | None = None
    until: datetime | None = None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def page(
    db: AsyncSession, wanted: AuditFilter, *, before: int | None, limit: int
) -> tuple[list[AuditEvent], int | None]:
    """One page of records, newest first, and the cursor of the next page (None after the last).

    Keyset pagination on the record id: `before` is the previous page's cursor, so a page costs one index
    range however deep it is, and records added meanwhile never shift a page.
    """
    query = select(AuditEvent)
    if wanted.actor is not None:
        query = query.where(col(AuditEvent.actor_id) == wanted.actor)
    if wanted.action is not None:
        query = query.where(col(AuditEvent.action) == wanted.action.value)
    if wanted.since is not None:
        query = query.where(col(AuditEvent.at) >= _aware(wanted.since))
    if wanted.until is not None:
        query = query.where(col(AuditEvent.at) < _aware(wanted.until))
    if before is not None:
        query = query.where(col(AuditEvent.audit_id) < before)
    rows = list(
        (await db.execute(query.order_by(col(AuditEvent.audit_id).desc()).limit(limit + 1))).scalars()
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].audit_id if more and rows else None)


async def read_page(
    db: AsyncSession,
    admin_id: uuid.UUID,
    wanted: AuditFilter,
    *,
    before: int | None,
    limit: int,
    address: str,
) -> tuple[list[AuditEvent], int | None]:
    """An admin's read of one page (`page`), itself audited: who looked, for what, from where."""
    events, next_before = await page(db, wanted, before=before, limit=limit)
    await record(
        db,
        AuditAction.AUDIT_READ,
        actor=admin_id,
        address=address,
        detail={
            "actor": str(wanted.actor) if wanted.actor else None,
            "action": wanted.action.value if wanted.action else None,
            "since": wanted.since is not None,
            "until": wanted.until is not None,
            "before": before,
        },
    )
    await db.commit()
    return events, next_before


# ---------------------------------------------------------------- retention


async def purge(db: AsyncSession, cutoff: datetime) -> int:
    """Delete the records older than `cutoff` through the table's one purge path (in `db`'s transaction).

    PostgreSQL refuses a cutoff less than a day ago, and any other DELETE of the table.
    """
    return int((await db.execute(select(func.audit_purge(cutoff)))).scalar_one())
