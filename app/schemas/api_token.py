"""API token schemas (/api/user/tokens): the value appears once, in the answer that creates it."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from app.schemas.common import Body, Message


class ApiTokenCreate(Body):
    """A new token: a name the user recognises it by, and optionally how many days it lives."""

    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiTokenPublic(BaseModel):
    """A token as listed: never its value."""

    token_id: uuid.UUID
    name: str
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None


class ApiTokenCreated(ApiTokenPublic):
    """A token just made, with its value (shown only here)."""

    token: str


class ApiTokenCreateResponse(Message):
    """The answer of POST /api/user/tokens."""

    data: ApiTokenCreated


class ApiTokenListResponse(Message):
    """The answer of GET /api/user/tokens, newest first."""

    data: list[ApiTokenPublic]
