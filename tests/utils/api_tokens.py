"""A signed-in user with an API token, for the /v1 (Tabby) routes."""

from __future__ import annotations

from typing import Any

import httpx

from tests.utils.asgi_api import signed_in


async def user_with_token(
    client: httpx.AsyncClient, preference: dict[str, Any] | None = None, **body: Any
) -> tuple[httpx.AsyncClient, str, dict[str, Any]]:
    """A signed-in client, a fresh API token's value, and the token as created (its listing fields)."""
    c, _ = await signed_in(client, preference)
    r = await c.post("/api/user/tokens", json={"name": "laptop", **body})
    assert r.status_code == 201, r.text
    created = r.json()["data"]
    return c, created["token"], created


def bearer(token: str, **headers: str) -> dict[str, str]:
    """Headers of a /v1 call with this token."""
    return {"authorization": f"Bearer {token}", **headers}
