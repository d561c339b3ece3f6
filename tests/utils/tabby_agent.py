"""The real tabby-agent (npm, pinned in tests/clients/tabby), started over stdio with its own HOME.

tabby-agent reads its server endpoint and token from `~/.tabby-client/agent/config.toml`; each agent here
gets a fresh HOME holding that file (anonymous usage tracking off: nothing may leave the machine). It runs
as Tabby's editors run it: `--lsp --stdio` (a language server), or plain `--stdio`, the agent's JSON-lines
protocol (`[id, {func, args}]` calling the agent's functions, the one Tabby's Vim plugin speaks).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from tests.utils.lsp_client import LspClient

CLIENT_DIR = Path(__file__).resolve().parents[1] / "clients" / "tabby"
AGENT_CLI = CLIENT_DIR / "node_modules" / "tabby-agent" / "dist" / "cli.js"


def agent_version() -> str:
    """The installed tabby-agent's version (what package.json pins)."""
    return str(json.loads((AGENT_CLI.parents[1] / "package.json").read_text())["version"])


def write_config(home: Path, endpoint: str, token: str) -> None:
    """The agent's config file under `home`."""
    config = home / ".tabby-client" / "agent" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f'[server]\nendpoint = "{endpoint}"\ntoken = "{token}"\n\n'
        "[anonymousUsageTracking]\ndisable = true\n\n"
        '[logs]\nlevel = "error"\n'
    )


async def spawn(home: Path, *args: str) -> asyncio.subprocess.Process:
    """`node cli.js <args>` with HOME=home (and nothing else of this process's environment but PATH)."""
    node = shutil.which("node")
    assert node, "node is needed to run tabby-agent"
    return await asyncio.create_subprocess_exec(
        node,
        str(AGENT_CLI),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={"HOME": str(home), "PATH": str(Path(node).parent)},
        cwd=home,  # its log rotator writes an audit.json into the working directory
    )


async def lsp_agent(home: Path) -> LspClient:
    """tabby-agent as a language server, initialized."""
    client = LspClient(await spawn(home, "--lsp", "--stdio"))
    await client.request(
        "initialize",
        {
            "processId": None,
            "rootUri": None,
            "capabilities": {},
            "clientInfo": {"name": "code4me-test", "version": "1"},
        },
    )
    await client.notify("initialized", {})
    return client


class JsonLineAgent:
    """tabby-agent's JSON-lines protocol: each request `[id, {"func", "args"}]`, answers `[id, result]`,
    events `[0, {...}]`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._next = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.noise: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def call(self, func: str, *args: Any, timeout: float = 30.0) -> Any:
        """Call one of the agent's functions."""
        self._next += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        assert self.process.stdin is not None
        self.process.stdin.write(
            (json.dumps([self._next, {"func": func, "args": list(args)}]) + "\n").encode()
        )
        await self.process.stdin.drain()
        return await asyncio.wait_for(future, timeout)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            try:
                request_id, result = json.loads(line)
            except ValueError:
                self.noise.append(line.decode(errors="replace"))  # not a protocol line
                continue
            if request_id == 0:
                self.events.append(result)
            elif (future := self._pending.pop(request_id, None)) is not None and not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """finalize, then end the process."""
        try:
            await self.call("finalize", timeout=10)
        except TimeoutError:
            pass
        finally:
            if self.process.returncode is None:
                self.process.terminate()
                try:
                    await asyncio.wait_for(self.process.wait(), 10)
                except TimeoutError:
                    self.process.kill()
                    await self.process.wait()
            self._reader.cancel()


async def json_line_agent(home: Path) -> JsonLineAgent:
    """tabby-agent over its JSON-lines stdio protocol, initialized."""
    agent = JsonLineAgent(await spawn(home, "--stdio"))
    await agent.call("initialize", {"clientProperties": {"session": {"client": "code4me-test"}}})
    return agent
