"""Session schemas."""

from __future__ import annotations

from app.schemas.common import Message


class SessionAcquireResponse(Message):
    """Answer to session acquire."""

    session_token: str
