"""Setting and clearing the plugin's token cookies."""

from __future__ import annotations

from fastapi import Response

from app.settings import Settings


def set_token_cookie(response: Response, settings: Settings, name: str, token: str, ttl_s: int) -> None:
    """HttpOnly, SameSite=Lax cookie that lives as long as the token; Secure in production."""
    response.set_cookie(
        name,
        token,
        max_age=ttl_s,
        httponly=True,
        samesite="lax",
        secure=settings.environment == "production",
        path="/",
    )


def clear_token_cookie(response: Response, name: str) -> None:
    """Tell the client to drop a token cookie."""
    response.delete_cookie(name, path="/")
