"""Account schemas."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator

from app.schemas.common import Body, Int32, Message

MAX_PREFERENCE_CHARS = 16_384
# How deeply a preference's free-form keys may nest (PostgreSQL and the readers of the stored JSON recurse).
MAX_PREFERENCE_DEPTH = 16
Provider = Literal["no_provider", "", "google"]


class Preference(BaseModel):
    """What the user lets the platform keep; every key optional on input, filled with defaults.

    Context is not stored unless the user opts in (as in the old server); the plugin's own keys
    (enabled_modules, module_values) are kept as sent.
    """

    model_config = ConfigDict(extra="allow")

    store_context: bool = False
    store_contextual_telemetry: bool = True
    store_behavioral_telemetry: bool = True
    allow_model_training: bool = False
    # Queries, chats and sessions older than this many days are deleted by the retention sweep; None keeps them.
    data_retention_days: int | None = Field(default=365, ge=1, le=3650)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, v: Any) -> Any:
        """The plugin's free-form keys are kept, but not without limit."""
        if isinstance(v, dict):
            if _depth(v) > MAX_PREFERENCE_DEPTH:
                raise ValueError(f"preference must be nested at most {MAX_PREFERENCE_DEPTH} levels deep")
            try:  # PostgreSQL's jsonb holds no NaN or Infinity (1e400 parses as Infinity)
                text = json.dumps(v, default=str, allow_nan=False)
            except ValueError:
                raise ValueError("preference must not contain NaN or Infinity") from None
            if len(text) > MAX_PREFERENCE_CHARS:
                raise ValueError(f"preference must be at most {MAX_PREFERENCE_CHARS} characters of JSON")
            if "\\u0000" in text:  # PostgreSQL's jsonb cannot hold NUL characters
                raise ValueError("preference must not contain NUL characters")
        return v


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value (without recursion: the value may be hostile)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_PREFERENCE_DEPTH:
                return level
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def no_nul(v: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters: refuse them up front instead of failing at the insert."""
    if isinstance(v, str) and "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


def parse_preference(v: Any) -> Any:
    """Accept a preference object or a JSON string of one."""
    if isinstance(v, str):
        try:
            return json.loads(v) if v.strip() else None
        except json.JSONDecodeError:
            raise ValueError("preference must be an object or a string holding a JSON object") from None
    return v


class UserCreate(Body):
    """POST /api/user/create (a password, or a Google ID token with provider 'google')."""

    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    password: str = Field(default="", max_length=256)
    config_id: Int32 | None = None
    preference: Preference | None = None
    provider: Provider = "no_provider"
    token: str = Field(default="", max_length=8192)

    @field_validator("preference", mode="before")
    @classmethod
    def _preference_json_string(cls, v: Any) -> Any:
        """Some plugin versions send the preference as a string holding JSON."""
        return parse_preference(v)

    _no_nul = field_validator("name")(no_nul)


class UserAuthenticate(Body):
    """POST /api/user/authenticate (password or Google ID token)."""

    email: EmailStr
    password: str = Field(default="", max_length=256)
    provider: Provider = "no_provider"
    token: str = Field(default="", max_length=8192)


class UserPublic(BaseModel):
    """A user as shown to clients (never the password hash)."""

    user_id: uuid.UUID
    email: str
    name: str
    # The plugin's parser requires a `password` string; it only ever gets this mask, never the hash.
    password: str = "**********"
    joined_at: datetime
    verified: bool
    config_id: int
    preference: Preference
    is_admin: bool


class UserCreateResponse(Message):
    """Answer to user creation."""

    user_id: uuid.UUID


class AuthenticateResponse(Message):
    """Answer to authentication: the user and their client config (HOCON)."""

    user: UserPublic
    config: str


class UserUpdate(Body):
    """PUT /api/user/update: only the keys sent change; null means unchanged.

    The old password is required to change the password or the email; `preference` is merged key by key
    into the stored one. A `verified` key (the plugin's model has one) is ignored: only a mailed link verifies.
    """

    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    previous_password: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=256)
    preference: dict[str, Any] | None = None
    config_id: int | None = None

    @field_validator("preference", mode="before")
    @classmethod
    def _preference_json_string(cls, v: Any) -> Any:
        """The plugin sends the preference as a string holding JSON."""
        return parse_preference(v)

    _no_nul = field_validator("name")(no_nul)


class UserResponse(Message):
    """Answer to update: the user as it is now."""

    user: UserPublic


class GetUserResponse(Message):
    """Answer to GET /api/user/get: the user and their client config (HOCON)."""

    user: UserPublic
    config: str


class VerificationStatus(Message):
    """Answer to GET /api/user/verify/check (the plugin's field name)."""

    user_is_verified: bool


class EmailRequest(Body):
    """A body naming an email address (password reset, verification resend without a session)."""

    email: EmailStr


class TokenRequest(Body):
    """A mailed token, sent back."""

    token: str = Field(min_length=1, max_length=512)


class PasswordResetChange(Body):
    """POST /api/user/reset-password/change: the mailed token and the new password."""

    token: str = Field(min_length=1, max_length=512)
    new_password: str = Field(min_length=1, max_length=256)


class SignInPublic(BaseModel):
    """One live sign-in (an auth token, with the plugin sessions acquired with it); never a token."""

    id: str = Field(
        description="The sign-in's own id (not derived from its token): DELETE /api/user/sessions/{id}"
    )
    created_at: datetime | None
    last_used_at: datetime | None = Field(description="Approximate; unknown near the end of the token's life")
    client_address: str | None
    user_agent: str | None
    current: bool = Field(description="The sign-in of this request")
    plugin_sessions: int


class SignInList(Message):
    """GET /api/user/sessions."""

    sessions: list[SignInPublic]


class SignOutOthers(Message):
    """POST /api/user/sessions/sign-out-others."""

    ended: int
