"""Password reset by mail: a single-use link; the request answers the same whether the address exists."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Unauthorized, Unprocessable
from app.identity import email_tokens, tokens
from app.identity.passwords import hash_password, password_problem
from app.infra.mail import Mail, lifetime_text
from app.infra.settings import Settings
from app.services import audit
from app.services.audit import AuditAction
from app.services.users import find_by_email
from db.tables import User

INVALID_LINK = "Invalid or expired password reset link: request a new one"
REQUESTED = "If an account with this email address exists, a password reset link has been sent to it"


async def signed_in_email(db: AsyncSession, redis: Redis, auth_token: str | None) -> str:
    """The email address of the caller's account, for a reset asked without naming one; 422 when signed out."""
    info = await tokens.resolve_auth(redis, auth_token) if auth_token else None
    user = await db.get(User, info.user_id) if info is not None else None
    if user is None:
        raise Unprocessable("Give the account's email address (in the body or as ?email=), or sign in")
    return user.email


async def request_reset(db: AsyncSession, redis: Redis, settings: Settings, email: str) -> Mail | None:
    """The reset mail for an existing account, else None; both paths make one lookup and one Redis call."""
    user = await find_by_email(db, email)
    if user is None:
        await email_tokens.spend_like_issue(redis, "reset")
        return None
    token = await email_tokens.issue(redis, "reset", user.user_id, user.email, settings.email_token_ttl_s)
    link = f"{settings.public_base_url}/api/user/reset-password?token={token}"
    text = (
        f"Hello {user.name},\n\n"
        f"Someone asked to reset the password of your Code4me account. To choose a new password, open:\n\n"
        f"{link}\n\n"
        f"The link works once and expires in {lifetime_text(settings.email_token_ttl_s)}. "
        "If you did not ask for this, ignore this mail: "
        "your password stays as it is.\n"
    )
    return Mail(to=user.email, subject="Reset your Code4me password", text=text)


async def check_link(redis: Redis, token: str) -> None:
    """401 unless the reset link can still be used (it is not used up here)."""
    if await email_tokens.peek(redis, "reset", token) is None:
        raise Unauthorized(INVALID_LINK)


async def change_password(
    db: AsyncSession, redis: Redis, token: str, new_password: str, *, address: str
) -> None:
    """Set a new password with a reset token (audited); every token of the account ends (sign in again
    everywhere)."""
    # Policy first: a refused password must not use the link up.
    problem = password_problem(new_password)
    if problem:
        raise Unprocessable(problem)
    info = await email_tokens.consume(redis, "reset", token)
    if info is None:
        raise Unauthorized(INVALID_LINK)
    user = await db.get(User, info.user_id)
    if user is None or user.email.lower() != info.email.lower():
        raise Unauthorized(INVALID_LINK)
    user.password_hash = await asyncio.to_thread(hash_password, new_password)
    # Opening the mailed link proved the address.
    user.verified = True
    await audit.record(
        db,
        AuditAction.PASSWORD_RESET,
        actor=user.user_id,
        address=address,
        target=audit.user_target(user.user_id),
    )
    await db.commit()
    await tokens.revoke_user(redis, user.user_id)
