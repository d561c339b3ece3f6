"""Accounts: creation (password or Google), authentication, reading and updating the user, and the
cached copy of each user's preference that the completion path reads instead of PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from app.errors import Conflict, Forbidden, Unauthorized, Unprocessable
from app.identity import tokens
from app.identity.google import GoogleIdentity, GoogleVerifier
from app.identity.passwords import burn_verification, hash_password, password_problem, verify_password
from app.schemas.user import Preference, UserAuthenticate, UserCreate, UserPublic, UserUpdate
from app.services import audit
from app.services.audit import AuditAction
from db.tables import Config, User

DEFAULT_CONFIG_ID = 1
# How long the hot paths may use a cached copy of a user's preference. A change through the API
# overwrites the copy after its commit (update_user) and account deletion removes it (tokens.revoke_user);
# readers only fill a missing copy (SET NX), so a reader that read PostgreSQL before a change cannot put
# the old value back. The TTL only bounds changes made directly in PostgreSQL.
USER_SNAPSHOT_TTL_S = 300
NOT_VERIFIED = (
    "Email address is not verified: open the link in the verification mail "
    "(POST /api/user/verify/resend sends a new one)"
)


def public_user(user: User) -> UserPublic:
    """The client view of a user row."""
    return UserPublic(
        user_id=user.user_id,
        email=user.email,
        name=user.name,
        joined_at=user.joined_at,
        verified=user.verified,
        config_id=user.config_id,
        preference=Preference.model_validate(user.preference or {}),
        is_admin=user.is_admin,
    )


def snapshot_preference(raw: bytes | str | None) -> dict[str, Any] | None:
    """The preference in a cached copy as Redis returned it; None when there is no usable copy."""
    cached = json.loads(raw) if raw is not None else None
    return cached if isinstance(cached, dict) else None


async def load_preference(
    sessionmaker: async_sessionmaker[AsyncSession], redis: Redis, user_id: uuid.UUID
) -> dict[str, Any] | None:
    """The user's preference from PostgreSQL (None when the account is gone), cached unless a copy exists."""
    async with sessionmaker() as db:
        row = (await db.execute(select(col(User.preference)).where(col(User.user_id) == user_id))).first()
    if row is None:
        return None
    preference: dict[str, Any] = row[0] or {}
    await redis.set(
        tokens.user_snapshot_key(user_id), json.dumps(preference), ex=USER_SNAPSHOT_TTL_S, nx=True
    )
    return preference


async def _store_snapshot(redis: Redis, user: User) -> None:
    """Overwrite the cached copy of a user's preference after a committed change."""
    await redis.set(
        tokens.user_snapshot_key(user.user_id), json.dumps(user.preference or {}), ex=USER_SNAPSHOT_TTL_S
    )


async def find_by_email(db: AsyncSession, email: str) -> User | None:
    """Case-insensitive lookup by email."""
    result = await db.execute(select(User).where(func.lower(User.email) == email.lower()))
    return result.scalar_one_or_none()


async def _check_config(db: AsyncSession, config_id: int) -> None:
    # Out of the integer column's range the database would fail the lookup itself.
    if not 0 < config_id < 2**31 or await db.get(Config, config_id) is None:
        raise Unprocessable(f"Unknown config_id {config_id}")


async def _insert(db: AsyncSession, user: User) -> User:
    db.add(user)
    try:
        await db.flush()
    except IntegrityError as exc:  # a concurrent create of the same email
        await db.rollback()
        raise Conflict("A user with this email already exists") from exc
    await db.commit()
    return user


async def create_user(db: AsyncSession, body: UserCreate) -> User:
    """Create a password account; 409 if the email is taken, 422 for a weak password or bad config."""
    problem = password_problem(body.password)
    if problem:
        raise Unprocessable(problem)
    config_id = body.config_id or DEFAULT_CONFIG_ID
    await _check_config(db, config_id)
    if await find_by_email(db, body.email) is not None:
        raise Conflict("A user with this email already exists")
    user = User(
        email=str(body.email),
        name=body.name.strip() or str(body.email),
        password_hash=await asyncio.to_thread(hash_password, body.password),
        config_id=config_id,
        preference=(body.preference or Preference()).model_dump(),
    )
    return await _insert(db, user)


def _same_email(identity: GoogleIdentity, email: str) -> None:
    if identity.email.lower() != email.lower():
        raise Unauthorized("The Google account's email does not match the email in the request")


async def check_google_create(db: AsyncSession, body: UserCreate) -> None:
    """What can be refused before the token is checked: a weak optional password, an unknown config."""
    if body.password:
        problem = password_problem(body.password)
        if problem:
            raise Unprocessable(problem)
    await _check_config(db, body.config_id or DEFAULT_CONFIG_ID)


async def create_google_user(db: AsyncSession, body: UserCreate, identity: GoogleIdentity) -> User:
    """Create an account from a verified Google identity (verified, OAuth sign-up; a password is optional)."""
    _same_email(identity, str(body.email))
    if await find_by_email(db, identity.email) is not None:
        raise Conflict("A user with this email already exists")
    user = User(
        email=str(body.email),
        name=body.name.strip() or identity.name or str(body.email),
        password_hash=await asyncio.to_thread(hash_password, body.password) if body.password else None,
        is_oauth_signup=True,
        verified=True,
        config_id=body.config_id or DEFAULT_CONFIG_ID,
        preference=(body.preference or Preference()).model_dump(),
    )
    return await _insert(db, user)


async def _signed_in(db: AsyncSession, user: User, provider: str, address: str) -> User:
    """Record a successful sign-in (committed before any token is issued) and return the user."""
    await audit.record(
        db,
        AuditAction.SIGN_IN,
        actor=user.user_id,
        address=address,
        target=audit.user_target(user.user_id),
        detail={"provider": provider},
    )
    await db.commit()
    return user


async def _refused(db: AsyncSession, user: User | None, provider: str, reason: str, address: str) -> None:
    """Record a failed sign-in (never what was typed: an address field often holds a password)."""
    await audit.record(
        db,
        AuditAction.SIGN_IN_FAILED,
        actor=None,
        address=address,
        target=audit.user_target(user.user_id) if user is not None else None,
        detail={"provider": provider, "reason": reason},
    )
    await db.commit()


async def authenticate_password(
    db: AsyncSession, body: UserAuthenticate, *, require_verified: bool, address: str
) -> User:
    """The user whose email and password match; one argon2 verification and one audit record either way."""
    if not body.password:
        raise Unprocessable("Password is required for provider 'no_provider'")
    user = await find_by_email(db, body.email)
    if user is None or user.password_hash is None:
        await asyncio.to_thread(burn_verification, body.password)
        await _refused(db, user, "password", "unknown_account" if user is None else "no_password", address)
        raise Unauthorized("Invalid email or password")
    ok, new_hash = await asyncio.to_thread(verify_password, body.password, user.password_hash)
    if not ok:
        await _refused(db, user, "password", "wrong_password", address)
        raise Unauthorized("Invalid email or password")
    if new_hash:
        user.password_hash = new_hash  # parameters changed since the hash was made
        await db.commit()
    # Only after the password matched: the answer must not tell strangers whether an address is verified.
    if require_verified and not user.verified:
        await _refused(db, user, "password", "not_verified", address)
        raise Forbidden(NOT_VERIFIED)
    return await _signed_in(db, user, "password", address)


async def authenticate_google(
    db: AsyncSession, email: str, token: str, google: GoogleVerifier, *, address: str
) -> User:
    """The account of a verified Google identity; the first sign-in creates it."""
    try:
        identity = await google.verify(token)
    except Unauthorized:
        await _refused(db, await find_by_email(db, email), "google", "invalid_token", address)
        raise
    if identity.email.lower() != email.lower():
        await _refused(db, await find_by_email(db, email), "google", "email_mismatch", address)
    _same_email(identity, email)
    user = await find_by_email(db, identity.email)
    if user is None:
        user = User(
            email=identity.email,
            name=identity.name or identity.email,
            is_oauth_signup=True,
            verified=True,
            config_id=DEFAULT_CONFIG_ID,
            preference=Preference().model_dump(),
        )
        try:
            user = await _insert(db, user)
        except Conflict:  # created concurrently (a double click): sign in to that account
            found = await find_by_email(db, identity.email)
            if found is None:
                raise
            user = found
        return await _signed_in(db, user, "google", address)
    if not user.verified:
        # Google proved the address belongs to the caller. A password set before that was set by whoever
        # registered the address, possibly not its owner (account pre-hijacking): it stops working.
        user.password_hash = None
        user.verified = True
    return await _signed_in(db, user, "google", address)


def merged_preference(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The stored preference with the sent keys replaced, validated as a whole; 422 naming bad keys."""
    try:
        return Preference.model_validate({**current, **update}).model_dump()
    except ValidationError as exc:
        fields = ", ".join(
            ".".join(str(p) for p in err["loc"]) + f": {err['msg']}"
            for err in exc.errors(include_input=False)
        )
        raise Unprocessable(f"Invalid preference: {fields or 'not an object'}") from None


async def update_user(db: AsyncSession, redis: Redis, user: User, body: UserUpdate, *, address: str) -> bool:
    """Apply a partial update (all checks before any write, audited with the names of the changed fields) and
    refresh the user's cached copy; True when the email changed (re-verify it)."""
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    new_email = str(changes["email"]) if "email" in changes else None
    email_changes = new_email is not None and new_email != user.email
    # A change of letter case only is still the same, verified, mailbox.
    address_changes = new_email is not None and new_email.lower() != user.email.lower()
    if "password" in changes or email_changes:
        if user.password_hash is None:
            raise Forbidden(
                "This account has no password (Google sign-in): set one through "
                "POST /api/user/reset-password/request first"
            )
        if not changes.get("previous_password"):
            raise Unprocessable("previous_password is required to change the password or the email")
        ok, _ = await asyncio.to_thread(verify_password, changes["previous_password"], user.password_hash)
        if not ok:
            raise Forbidden("Previous password is incorrect")
    if "password" in changes:
        problem = password_problem(changes["password"])
        if problem:
            raise Unprocessable(problem)
    if address_changes:
        assert new_email is not None
        if await find_by_email(db, new_email) is not None:
            raise Conflict("A user with this email already exists")
    if "config_id" in changes:
        await _check_config(db, changes["config_id"])
    preference = (
        merged_preference(user.preference or {}, changes["preference"]) if "preference" in changes else None
    )

    if "name" in changes:
        user.name = changes["name"].strip() or user.name
    if "password" in changes:
        user.password_hash = await asyncio.to_thread(hash_password, changes["password"])
    if email_changes:
        assert new_email is not None
        user.email = new_email
        user.verified = user.verified and not address_changes
    if "config_id" in changes:
        user.config_id = changes["config_id"]
    if preference is not None:
        user.preference = preference
    fields = sorted(k for k in changes if k != "previous_password")
    if fields:
        await audit.record(
            db,
            AuditAction.USER_UPDATE,
            actor=user.user_id,
            address=address,
            target=audit.user_target(user.user_id),
            detail={"fields": fields},
        )
    try:
        await db.commit()
    except IntegrityError as exc:  # the email was taken concurrently
        await db.rollback()
        raise Conflict("A user with this email already exists") from exc
    await _store_snapshot(redis, user)
    return address_changes
