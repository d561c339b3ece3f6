"""Account schemas."""

from __future__ import annotations

import uuid
from datetime import datetime

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from app.schemas.common import Body, Int32, Message


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
    data_retention_days: int = Field(default=365, ge=1, le=3650)


def parse_preference(v: Any) -> Any:
    """Accept a preference object or a JSON string of one."""
    if isinstance(v, str):
        try:
            return json.loads(v) if v.strip() else None
        except json.JSONDecodeError:
            raise ValueError("preference must be an object or a string holding a JSON object") from None
    return v


class UserCreate(Body):
    """POST /api/user/create."""

    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=256)
    config_id: Int32 | None = None
    preference: Preference | None = None

    @field_validator("preference", mode="before")
    @classmethod
    def _preference_json_string(cls, v: Any) -> Any:
        """Some plugin versions send the preference as a string holding JSON."""
        return parse_preference(v)


class UserAuthenticate(Body):
    """POST /api/user/authenticate (password or Google ID token)."""

    email: EmailStr
    password: str = Field(default="", max_length=256)
    provider: str = "no_provider"
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
