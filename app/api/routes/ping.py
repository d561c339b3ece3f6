"""Liveness route the plugin uses."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

router = APIRouter(tags=["ping"])
UP: dict[int | str, dict[str, Any]] = {200: {"description": "The ingress is up (empty body)", "content": {}}}


@router.get("/api/ping", status_code=200, response_class=Response, responses=UP)
@router.head("/api/ping", status_code=200, response_class=Response, responses=UP)
async def ping() -> Response:
    """200 while the ingress is up."""
    return Response(status_code=200)
