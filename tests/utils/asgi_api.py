"""The FastAPI app in-process on real PostgreSQL and Redis, with models replaced by a scripted gateway."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from app.bootstrap import build_state, close_state
from app.infra.settings import Settings
from app.infra.state import AppState
from app.main import create_app
from app.protocol import ChatCall, CompletionCall, CompletionResult, ModelCard
from app.telemetry.stream import wait_drained
from app.workers.telemetry_writer import TelemetryWriter
from deployments.registry import ModelEntry
from tests.utils import payloads as P
from tests.utils.outbox import link_token, mails_to


class ScriptedGateway:
    """Answers like a model deployment; the model named 'broken' always fails."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def complete(self, model_name: str, call: CompletionCall) -> CompletionResult:
        """One scripted completion (or a crash for 'broken')."""
        self.calls.append((model_name, call))
        if model_name == "broken":
            raise RuntimeError("model crashed")
        if model_name == "slow":
            await asyncio.sleep(4.0)  # long enough to be cancelled or superseded
        return CompletionResult(
            completion="read()",
            confidence=0.5,
            token_logprobs=(-0.7, -0.7),
            generation_time_ms=12,
            tokens_generated=2,
            stopped_by="newline",
            batch_size=1,
            replica_ms=None,  # not a Serve replica
        )

    async def chat(self, model_name: str, call: ChatCall) -> AsyncIterator[str]:
        """A scripted streamed answer that quotes the last message (or a crash for 'broken...')."""
        self.calls.append((model_name, call))
        if model_name.startswith("broken"):
            raise RuntimeError("model crashed")
        for piece in ("You ", "asked: ", call.messages[-1].content[:40]):
            await asyncio.sleep(0.01)
            yield piece

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Real all-MiniLM-L6-v2 embeddings, in process (loaded once, on first use)."""
        return minilm().embed(texts)


@lru_cache(maxsize=1)
def minilm() -> Any:
    """The packaged MiniLM embedder, shared by every test of the process."""
    from deployments.inference.embedding import MiniLMEmbedder

    return MiniLMEmbedder()


ENTRIES = [
    {"name": "scripted", "model_id": "x/scripted", "family": "code4me", "is_default": True},
    {"name": "broken", "model_id": "x/broken", "family": "code4me"},
    {"name": "slow", "model_id": "x/slow", "family": "code4me", "generation": {"time_budget_s": 10.0}},
    {"name": "chatty", "model_id": "x/chatty", "family": "plain", "is_chat": True},
    {"name": "broken-chatty", "model_id": "x/broken-chatty", "family": "plain", "is_chat": True},
]


def cards_of(entries: list[dict[str, Any]]) -> list[ModelCard]:
    """The model cards the builder would hand the ingress for these registry entries."""
    return [ModelEntry.model_validate(entry).card() for entry in entries]


class MailSettledTransport(httpx.ASGITransport):
    """The app in-process, each answer handed back once the mail its request posted is delivered, so that a
    test reads the outbox right away (the app itself never waits for mail: app/infra/mail.py MailQueue)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """The app's answer, after its mail."""
        response = await super().handle_async_request(request)
        await self.app.state.c4m.mail.drained()  # type: ignore[attr-defined]
        return response


def api_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of an in-process test app; mail goes to the outbox under `data_dir`.

    Rate limits are off: these tests sign up many users from one address (test_rate_limits.py tests them).
    """
    base = Settings(environment="test", max_context_chars=10_000, rate_limit_enabled=False)
    # model_copy: data_dir is read from CODE4ME_DATA_DIR only, so it cannot be passed by name.
    return base.model_copy(update={"data_dir": data_dir, **overrides})


@asynccontextmanager
async def running_api(
    database_url: str,
    redis_url: str,
    settings: Settings,
    entries: list[dict[str, Any]] | None = None,
    gateway: Any = None,
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState]]:
    """The FastAPI app in-process on the given services and settings (scripted models unless `gateway` is
    given): a client and its state."""

    def make_state():  # type: ignore[no-untyped-def]
        return build_state(
            settings,
            database_url,
            redis_url,
            gateway or ScriptedGateway(),
            cards_of(ENTRIES if entries is None else entries),
        )

    state = await make_state()
    app = create_app(make_state)
    app.state.c4m = state
    # The telemetry writer runs in-process here; in the Serve app it is a Ray actor around the same class.
    writer = TelemetryWriter(
        redis_url, database_url, f"test-writer-{uuid.uuid4().hex[:8]}", keyring=state.keyring
    )
    task = asyncio.create_task(writer.run())
    try:
        async with httpx.AsyncClient(
            transport=MailSettledTransport(app=app), base_url="http://test"
        ) as client:
            yield client, state
        await wait_drained(state.redis)
    finally:
        writer.stop()
        await task
        await close_state(state)


def model_id(state: AppState, name: str) -> int:
    """The database id of a registry model."""
    info = state.model_by_name(name)
    assert info is not None
    return info.model_id


def fresh_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """A client on the same app with its own cookie jar."""
    return httpx.AsyncClient(transport=client._transport, base_url="http://test")


async def signed_in(
    client: httpx.AsyncClient, preference: dict[str, Any] | None = None, *, verified: bool = False
) -> tuple[httpx.AsyncClient, str]:
    """A fresh client (own cookie jar) that went through create -> authenticate -> acquire -> project
    (and, when `verified`, opened the link of its verification mail)."""
    c = fresh_client(client)
    email = P.new_email()
    pref = {"store_context": True} if preference is None else preference
    r = await c.post("/api/user/create", json={**P.user_create(email), "preference": pref})
    assert r.status_code == 201, r.text
    if verified:
        await verify_address(c, email)
    r = await c.post("/api/user/authenticate", json=P.authenticate(email))
    assert r.status_code == 200, r.text
    r = await c.get("/api/session/acquire")
    assert r.status_code == 200, r.text
    r = await c.post("/api/project/create", json={"project_name": "demo"})
    assert r.status_code == 201, r.text
    return c, email


async def verify_address(c: httpx.AsyncClient, email: str) -> None:
    """Verify an address as its owner does: the link of the latest verification mail in the app's outbox."""
    transport = c._transport
    assert isinstance(transport, httpx.ASGITransport)
    outbox_dir = transport.app.state.c4m.settings.outbox_dir  # type: ignore[attr-defined]
    mails = [m for m in mails_to(outbox_dir, email) if m["Subject"].startswith("Verify")]
    assert mails, f"no verification mail to {email}"
    r = await c.post("/api/user/verify", json={"token": link_token(mails[-1], "/api/user/verify")})
    assert r.status_code == 200, r.text


async def count(state: AppState, model: Any) -> int:
    """Rows in one table."""
    async with state.sessionmaker() as db:
        return int((await db.execute(select(func.count()).select_from(model))).scalar_one())


async def settle(state: AppState) -> None:
    """Wait until every telemetry event the app produced so far is in PostgreSQL."""
    await wait_drained(state.redis)


def shipped_entries(config: str = "local.yaml") -> list[dict[str, Any]]:
    """The model registry of a shipped Serve config (validated, as the builder hands it to the ingress)."""
    import yaml

    from deployments.registry import load_args

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / config).read_text())
    return [entry.model_dump() for entry in load_args(raw["applications"][0]["args"]).models]
