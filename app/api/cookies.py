"""Setting and clearing the plugin's token cookies."""

from __future__ import annotations

from fastapi import Response

from app.infra.settings import Settings


def set_token_cookie(response: Response, settings: Settings, name: str, token: str) -> None:
    """HttpOnly, SameSite=Lax cookie that lives as long as the token can; Secure in production.

    Tokens slide (each use renews them server-side) up to `token_max_age_s`, and clients such as the
    plugin's cookie store drop a cookie at its Max-Age: so the cookie lives to the cap, and the server
    alone decides when the token behind it has expired.
    """
    response.set_cookie(
        name,
        token,
        max_age=settings.token_max_age_s,
        httponly=True,
        samesite="lax",
        secure=settings.environment == "production",
        path="/",
    )


def clear_token_cookie(response: Response, name: str) -> None:
    """Tell the client to drop a token cookie."""
    response.delete_cookie(name, path="/")
