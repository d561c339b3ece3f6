"""The real tabby-agent (npm, pinned) against the platform on a real port, with the shipped default model.

As a language server (`--lsp --stdio`, driven by tests/utils/lsp_client.py) it opens a document and asks for
a completion; over its JSON-lines stdio protocol (what Tabby's Vim plugin speaks) it reports the server's
health, completes, and accepting the completion sends the `select` event. Query, generation and acceptance
end up in PostgreSQL; a revoked token leaves the agent unauthorized.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.infra.encryption import opened
from app.infra.state import AppState
from db.tables import ContextualTelemetry, Generation, MetaQuery, PluginVersion
from serve.embedded import ServiceUrls
from tests.utils.api_tokens import user_with_token
from tests.utils.asgi_api import api_settings, model_id, running_api, settle
from tests.utils.http_server import served
from tests.utils.local_model import TINY_ENTRY, LocalModelGateway
from tests.utils.tabby_agent import AGENT_CLI, agent_version, json_line_agent, lsp_agent, write_config

PREFIX = "import os\n\n\ndef read_file(path):\n    with open(path) as f:\n        return f."
SUFFIX = "\n"


@pytest.fixture(scope="module")
async def platform(
    services: ServiceUrls, data_dir: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState, str]]:
    """The app with the shipped default model behind a real HTTP server; a client, the state, the base URL."""
    assert AGENT_CLI.exists(), "tabby-agent is missing: run `make tabby-agent` (part of `make test`)"
    gateway = LocalModelGateway()
    async with (
        running_api(
            services.database_url,
            services.redis_url,
            api_settings(data_dir),
            entries=[TINY_ENTRY],
            gateway=gateway,
        ) as (client, state),
        served(client) as base,
    ):
        yield client, state, base


async def until(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """Poll an async predicate until it holds (or fail)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.1)


async def test_the_agent_as_a_language_server_completes_with_our_model(platform, tmp_path: Path) -> None:
    client, state, base = platform
    _, token, _ = await user_with_token(client)
    write_config(tmp_path, base, token)
    lsp = await lsp_agent(tmp_path)
    try:
        uri = "file:///work/demo/io_utils.py"
        await lsp.notify(
            "textDocument/didOpen",
            {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": PREFIX + SUFFIX}},
        )
        lines = PREFIX.split("\n")
        position = {"line": len(lines) - 1, "character": len(lines[-1])}
        completions = await lsp.request(
            "textDocument/completion", {"textDocument": {"uri": uri}, "position": position}
        )
        gateway = state.gateway
        assert isinstance(gateway, LocalModelGateway)
        items = completions["items"]
        assert items, f"no completion (the model answered {gateway.answers!r})"
        completion_id = items[0]["data"]["completionId"]
        assert completion_id.startswith("cmpl-")
        await settle(state)
        async with state.sessionmaker() as db:
            generation = await db.get(
                Generation, (uuid.UUID(completion_id[5:]), model_id(state, "code4me-tiny"))
            )
        assert generation is not None
        stored = opened(generation, state.keyring)["completion"]
        assert stored
        # What the editor would insert is our model's completion (tabby-agent's post-processing may cut it).
        inserted = items[0]["textEdit"]["newText"].strip()
        assert inserted and inserted in stored
        assert gateway.calls[-1].prefix.endswith("return f.")
        # A healthy server: the agent never warned the editor about its status.
        assert not [n for n in lsp.notifications if n["method"] == "window/showMessage"]
    finally:
        await lsp.close()


async def test_the_agent_reports_health_completes_and_sends_the_acceptance(platform, tmp_path: Path) -> None:
    client, state, base = platform
    _, token, _ = await user_with_token(client)
    write_config(tmp_path, base, token)
    agent = await json_line_agent(tmp_path)
    try:
        assert await until(lambda: _ready(agent)) == "ready"
        health = await agent.call("getServerHealthState")
        assert health["model"] == "code4me-tiny" and health["device"] == "cpu"
        request = {
            "filepath": "/work/demo/io_utils.py",
            "language": "python",
            "text": PREFIX + SUFFIX,
            "position": len(PREFIX),
            "manually": True,
        }
        answer = await agent.call("provideCompletions", request)
        gateway = state.gateway
        assert isinstance(gateway, LocalModelGateway)
        assert answer["choices"], f"no completion (the model answered {gateway.answers!r})"
        choice = answer["choices"][0]
        assert answer["id"].startswith("cmpl-")
        meta_query_id = uuid.UUID(answer["id"][5:])
        # The editor shows it, the user accepts it: the agent's events.
        for kind in ("view", "select"):
            event = {"type": kind, "completion_id": answer["id"], "choice_index": choice["index"]}
            assert await agent.call("postEvent", event) is True
        await settle(state)
        async with state.sessionmaker() as db:
            meta = await db.get(MetaQuery, meta_query_id)
            generation = await db.get(Generation, (meta_query_id, model_id(state, "code4me-tiny")))
            assert meta is not None and generation is not None
            contextual = await db.get(ContextualTelemetry, meta.contextual_telemetry_id)
            assert contextual is not None and contextual.language_id == 47
            version = await db.get(PluginVersion, contextual.version_id)
        assert generation.was_accepted and len(generation.shown_at) == 1
        assert choice["text"].strip() and choice["text"].strip() in (
            opened(generation, state.keyring)["completion"] or ""
        )
        # tabby-agent 1.5.0 names no version of its own: Node's fetch sends `User-Agent: node`.
        assert version is not None and (version.version_name, version.ide_type) == ("node", "Tabby")
    finally:
        await agent.close()


async def test_a_revoked_token_leaves_the_agent_unauthorized(platform, tmp_path: Path) -> None:
    client, _, base = platform
    c, token, created = await user_with_token(client)
    assert (await c.delete(f"/api/user/tokens/{created['token_id']}")).status_code == 200
    write_config(tmp_path / "json", base, token)
    agent = await json_line_agent(tmp_path / "json")
    try:
        assert await until(lambda: _settled(agent)) == "unauthorized"
        assert await agent.call("getServerHealthState") is None
    finally:
        await agent.close()
    write_config(tmp_path / "lsp", base, token)
    lsp = await lsp_agent(tmp_path / "lsp")
    try:
        warning = await until(lambda: _warning(lsp))
        assert "unauthorized" in warning
    finally:
        await lsp.close()


def test_the_pinned_agent_is_installed() -> None:
    assert agent_version() == "1.5.0"


async def _ready(agent) -> str | None:  # type: ignore[no-untyped-def]
    status = await agent.call("getStatus")
    return status if status in ("ready",) else None


async def _settled(agent) -> str | None:  # type: ignore[no-untyped-def]
    status = await agent.call("getStatus")
    return status if status in ("ready", "unauthorized", "disconnected") else None


async def _warning(lsp) -> str | None:  # type: ignore[no-untyped-def]
    found = [n["params"]["message"] for n in lsp.notifications if n["method"] == "window/showMessage"]
    return found[0] if found else None
