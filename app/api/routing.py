"""An APIRouter that answers each path with and without a trailing slash (the plugin uses both)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter


class SlashTolerantRouter(APIRouter):
    """Registers `/x` and `/x/` for every route; only the first appears in the OpenAPI schema."""

    def add_api_route(self, path: str, endpoint: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Add the route and its twin with the trailing slash toggled."""
        super().add_api_route(path, endpoint, **kwargs)
        if path in ("", "/"):
            return
        twin = path[:-1] if path.endswith("/") else path + "/"
        twin_kwargs = dict(kwargs, include_in_schema=False)
        twin_kwargs.pop("operation_id", None)
        super().add_api_route(twin, endpoint, **twin_kwargs)

    def add_api_websocket_route(self, path: str, endpoint: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Add the WebSocket route and its twin with the trailing slash toggled."""
        super().add_api_websocket_route(path, endpoint, **kwargs)
        if path not in ("", "/"):
            super().add_api_websocket_route(
                path[:-1] if path.endswith("/") else path + "/", endpoint, **kwargs
            )
