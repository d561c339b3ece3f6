"""The FastAPI app in-process on real PostgreSQL and Redis, with models replaced by a scripted gateway."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import httpx
from sqlalchemy import func, select

from app.state import AppState
from tests.utils import payloads as P


class ScriptedGateway:
    """Answers like a model deployment; the model named 'broken' always fails."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def complete(self, model_name: str, request: dict[str, Any]) -> dict[str, Any]:
        """One scripted completion (or a crash for 'broken')."""
        self.calls.append((model_name, request))
        if model_name == "broken":
            raise RuntimeError("model crashed")
        return {"completion": "read()", "confidence": 0.5, "token_logprobs": [-0.7, -0.7], "generation_time_ms": 12}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Real all-MiniLM-L6-v2 embeddings, in process (loaded once, on first use)."""
        return minilm().embed(texts)


@lru_cache(maxsize=1)
def minilm() -> Any:
    """The packaged MiniLM embedder, shared by every test of the process."""
    from deployments.embedder import MiniLMEmbedder

    return MiniLMEmbedder()


ENTRIES = [
    {"name": "scripted", "model_id": "x/scripted", "family": "code4me", "is_default": True},
    {"name": "broken", "model_id": "x/broken", "family": "code4me"},
    {"name": "chatty", "model_id": "x/chatty", "family": "plain", "is_chat": True},
]


def model_id(state: AppState, name: str) -> int:
    """The database id of a registry model."""
    info = state.model_by_name(name)
    assert info is not None
    return info.model_id


def fresh_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client on the same app with its own cookie jar."""
    return httpx.AsyncClient(transport=client._transport, base_url="http://test")


async def signed_in(client: httpx.AsyncClient, preference: dict[str, Any] | None = None) -> tuple[httpx.AsyncClient, str]:
    """A fresh client (own cookie jar) that went through create -> authenticate -> acquire -> project."""
    c = fresh_client(client)
    email = P.new_email()
    pref = {"store_context": True} if preference is None else preference
    r = await c.post("/api/user/create", json={**P.user_create(email), "preference": pref})
    assert r.status_code == 201, r.text
    r = await c.post("/api/user/authenticate", json=P.authenticate(email))
    assert r.status_code == 200, r.text
    r = await c.get("/api/session/acquire")
    assert r.status_code == 200, r.text
    r = await c.post("/api/project/create", json={"project_name": "demo"})
    assert r.status_code == 201, r.text
    return c, email


async def count(state: AppState, model: Any) -> int:
    """Rows in one table."""
    async with state.sessionmaker() as db:
        return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def settle(state: AppState) -> None:
    """Wait until every telemetry event the app produced so far is in PostgreSQL (writes are synchronous today)."""
    return None
