"""Administrators: the `is_admin` flag of an account, set and cleared by `code4me admin` (audited)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.services import audit
from app.services.audit import AuditAction
from app.services.users import find_by_email


async def set_admin(db: AsyncSession, email: str, *, admin: bool) -> bool:
    """Make the account of `email` an administrator (or not); True when that changed it (then audited).

    The command line has no signed-in user and no client address: the record's actor and address are empty
    and its detail says where the change came from.
    """
    user = await find_by_email(db, email)
    if user is None:
        raise NotFound("No account has this email address")
    if user.is_admin == admin:
        return False
    user.is_admin = admin
    await audit.record(
        db,
        AuditAction.ADMIN_GRANT if admin else AuditAction.ADMIN_REVOKE,
        actor=None,
        address=None,
        target=audit.user_target(user.user_id),
        detail={"via": "cli"},
    )
    await db.commit()
    return True
