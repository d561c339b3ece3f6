"""Email verification: a single-use link mailed at sign-up, on request and after an email change."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Unauthorized
from app.identity import email_tokens
from app.infra.mail import Mail, lifetime_text
from app.infra.settings import Settings
from app.services.users import find_by_email
from db.tables import User

INVALID_LINK = "Invalid or expired verification link: request a new one"


# The platform's mails carry no text a user chose (not even the account's name): anyone can sign up with
# anyone's address, so a name in the mail would let strangers send their own words from the platform.


async def verification_mail(redis: Redis, settings: Settings, user: User) -> Mail:
    """Issue a verification token for the user's current address and the mail that carries it."""
    token = await email_tokens.issue(redis, "verify", user.user_id, user.email, settings.email_token_ttl_s)
    link = f"{settings.public_base_url}/api/user/verify?token={token}"
    text = (
        "Please confirm that this is your email address for Code4me by opening this link:\n\n"
        f"{link}\n\n"
        f"The link works once and expires in {lifetime_text(settings.email_token_ttl_s)}. "
        "If you did not sign up for Code4me, ignore this mail.\n"
    )
    return Mail(to=user.email, subject="Verify your email address for Code4me", text=text)


async def sign_up_attempt_mail(redis: Redis, user: User) -> Mail:
    """The notice to an account's owner that someone tried to sign up with the address (one Redis round trip,
    like the verification mail a new account gets)."""
    await email_tokens.spend_like_issue(redis, "verify")
    text = (
        "Someone tried to create a Code4me account with this email address, which already has one. "
        "No new account was created and your account is unchanged.\n\n"
        "If it was you: sign in with your password, or ask for a password reset from the sign-in "
        "page of the Code4me plugin if you forgot it. If it was not you, you can ignore this mail.\n"
    )
    return Mail(to=user.email, subject="Sign-up attempt with your Code4me address", text=text)


async def resend(redis: Redis, settings: Settings, user: User) -> Mail:
    """A new verification mail for a signed-in user; 409 when already verified."""
    if user.verified:
        raise Conflict("Email address is already verified")
    return await verification_mail(redis, settings, user)


async def resend_by_email(db: AsyncSession, redis: Redis, settings: Settings, email: str) -> Mail | None:
    """A new verification mail for an unverified account, by address (answers the same either way)."""
    user = await find_by_email(db, email)
    if user is None or user.verified:
        await email_tokens.spend_like_issue(redis, "verify")
        return None
    return await verification_mail(redis, settings, user)


async def is_live(redis: Redis, token: str) -> bool:
    """Whether a verification link can still be used (without using it)."""
    return await email_tokens.peek(redis, "verify", token) is not None


async def verify(db: AsyncSession, redis: Redis, token: str) -> User:
    """Use a verification token up and mark the address verified; 401 for a dead link."""
    info = await email_tokens.consume(redis, "verify", token)
    if info is None:
        raise Unauthorized(INVALID_LINK)
    user = await db.get(User, info.user_id)
    # The link verifies the address it was mailed to, not whatever the account's address is now.
    if user is None or user.email.lower() != info.email.lower():
        raise Unauthorized(INVALID_LINK)
    user.verified = True
    await db.commit()
    return user
