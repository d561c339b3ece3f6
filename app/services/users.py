"""Account creation and password authentication."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Unauthorized, Unprocessable
from app.passwords import burn_verification, hash_password, password_problem, verify_password
from app.schemas.user import Preference, UserAuthenticate, UserCreate, UserPublic
from db.tables import Config, User

DEFAULT_CONFIG_ID = 1


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


async def find_by_email(db: AsyncSession, email: str) -> User | None:
    """Case-insensitive lookup by email."""
    result = await db.execute(select(User).where(func.lower(User.email) == email.lower()))
    return result.scalar_one_or_none()


async def create_user(db: AsyncSession, body: UserCreate) -> User:
    """Create a password account; 409 if the email is taken, 422 for a weak password or bad config."""
    problem = password_problem(body.password)
    if problem:
        raise Unprocessable(problem)
    config_id = body.config_id or DEFAULT_CONFIG_ID
    if await db.get(Config, config_id) is None:
        raise Unprocessable(f"Unknown config_id {config_id}")
    if await find_by_email(db, body.email) is not None:
        raise Conflict("A user with this email already exists")
    user = User(
        email=str(body.email),
        name=body.name.strip() or str(body.email),
        password_hash=hash_password(body.password),
        config_id=config_id,
        preference=(body.preference or Preference()).model_dump(),
    )
    db.add(user)
    try:
        await db.flush()
    except IntegrityError as exc:  # a concurrent create of the same email
        raise Conflict("A user with this email already exists") from exc
    await db.commit()
    return user


async def authenticate_password(db: AsyncSession, body: UserAuthenticate) -> User:
    """The user whose email and password match; one argon2 verification either way."""
    if not body.password:
        raise Unprocessable("Password is required for provider 'no_provider'")
    user = await find_by_email(db, body.email)
    if user is None or user.password_hash is None:
        burn_verification(body.password)
        raise Unauthorized("Invalid email or password")
    ok, new_hash = verify_password(body.password, user.password_hash)
    if not ok:
        raise Unauthorized("Invalid email or password")
    if new_hash:
        user.password_hash = new_hash  # parameters changed since the hash was made
    await db.commit()
    return user
