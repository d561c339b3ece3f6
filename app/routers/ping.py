"""Liveness route the plugin uses."""

from __future__ import annotations

from fastapi import APIRouter, Response

router = APIRouter(tags=["ping"])


@router.api_route("/api/ping", methods=["GET", "HEAD"], status_code=200)
async def ping() -> Response:
    """200 while the ingress is up."""
    return Response(status_code=200)
