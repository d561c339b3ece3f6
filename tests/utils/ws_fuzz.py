"""Schema-driven fuzzing of the WebSocket operations (tests/integration/test_fuzz.py, `python -m bench fuzz --fuzz-surface ws`).

The REST fuzz (tests/utils/fuzz.py) reads the app's OpenAPI document; WebSocket messages have none, so
one is written here from the operations' own pydantic models (the ones app/api/routes/ws.py validates
with), one POST operation per socket operation, and schemathesis generates bodies from it: positive
cases (valid by the schema, about half steered to real ids as in the REST fuzz) and negative ones
(violating it). Each body is sent on an open, signed-in socket as `{"request_id": n, "<operation>": body}`
and the socket's answer to `n` is checked: it arrives (within ANSWER_S), it is not a 5xx, the socket
stays open, and a negative body gets a 4xx error reply.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

import anyio
import schemathesis
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel
from starlette.testclient import TestClient, WebSocketTestSession

from app.api.routes import ws
from app.schemas.chat import ChatRequest
from app.schemas.completion import CompletionRequest, FeedbackRequest
from app.schemas.context import MultiFileContextUpdate
from tests.utils.fuzz import (
    MODES,
    Credentials,
    Finding,
    FuzzReport,
    credentials_of,
    fuzz_app,
    generated,
    steer,
)

ANSWER_S = 15.0

SOCKETS = {
    "/api/ws/completion": ws.COMPLETION_OPS,
    "/api/ws/completion/multi-file-context": ws.CONTEXT_OPS,
    "/api/ws/chat": ws.CHAT_OPS,
}
# The body model of each operation (as its handler validates it); None: a scalar body is also accepted.
BODIES: dict[str, tuple[type[BaseModel], dict[str, Any] | None]] = {
    "completion_request": (CompletionRequest, None),
    "completion_feedback": (FeedbackRequest, None),
    "multi_file_context_update": (MultiFileContextUpdate, None),
    "chat_request": (ChatRequest, None),
    "chat_get": (ws.ChatGet, ws.ChatGet.model_json_schema()["properties"]["page_number"]),
    "chat_delete": (ws.ChatDelete, None),
    "cancel": (ws.Cancel, {"type": "string"}),
}


def ws_openapi() -> dict[str, Any]:
    """An OpenAPI 3.1 document with one POST `/<socket path>/<operation>` per WebSocket operation."""
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for socket, operations in SOCKETS.items():
        for operation in sorted(operations):
            model, scalar = BODIES[operation]
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
            schema: dict[str, Any] = {"$ref": f"#/components/schemas/{model.__name__}"}
            if scalar is not None:
                schema = {"anyOf": [schema, scalar]}
            paths[f"{socket}/{operation}"] = {
                "post": {
                    "operationId": f"{socket}:{operation}",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
                    "responses": {"200": {"description": "the operation's reply frame"}},
                }
            }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Code4me WebSocket operations", "version": "1"},
        "paths": paths,
        "components": {"schemas": components},
    }


def _receive(socket: WebSocketTestSession, seconds: float) -> dict[str, Any] | None:
    """The socket's next message within `seconds` (None if nothing came)."""

    async def next_message() -> Any:
        with anyio.move_on_after(seconds):
            return await socket._send_rx.receive()  # the test client's own queue (no public timeout)
        return None

    return socket.portal.call(next_message)


@dataclass
class _Socket:
    """One open socket of the fuzz user (reopened when a case's answer ended its credentials)."""

    client: TestClient
    path: str
    creds: Credentials
    session: Any = None
    conn: WebSocketTestSession | None = None

    def open(self) -> WebSocketTestSession:
        if self.conn is None:
            cookie = "; ".join(f"{k}={v}" for k, v in self.creds.cookies.items())
            self.session = self.client.websocket_connect(self.path, headers={"cookie": cookie})
            self.conn = self.session.__enter__()
        return self.conn

    def close(self) -> None:
        if self.session is not None:
            # A socket the app already closed raises here; that close was reported as a finding.
            with contextlib.suppress(Exception):
                self.session.__exit__(None, None, None)
        self.session = self.conn = None


def run_ws_fuzz(
    database_url: str,
    redis_url: str,
    *,
    examples: int = 100,
    seed_value: int = 4,
    only: str | None = None,
) -> FuzzReport:
    """Fuzz every WebSocket operation; the report lists distinct failures (none is the goal)."""
    report = FuzzReport()
    began = time.perf_counter()
    app = fuzz_app(database_url, redis_url)
    schema = schemathesis.openapi.from_dict(ws_openapi())
    numbers = itertools.count(1)
    with TestClient(app) as client:
        state = app.state.c4m
        creds = credentials_of(client, state)
        for result in schema.get_all_operations():
            operation = result.ok()
            socket_path, name = operation.path.rsplit("/", 1)
            label = f"WS {socket_path} {name}"
            if only and only not in label:
                continue
            socket = _Socket(client, socket_path, creds)
            try:
                for mode in MODES:
                    _fuzz(report, operation, mode, label, name, socket, numbers, examples, seed_value)
            finally:
                socket.close()
    report.seconds = time.perf_counter() - began
    return report


def _fuzz(
    report: FuzzReport,
    operation: Any,
    mode: Any,
    label: str,
    name: str,
    socket: _Socket,
    numbers: itertools.count[int],
    examples: int,
    seed_value: int,
) -> None:
    negative = mode == schemathesis.GenerationMode.NEGATIVE

    def finding(check: str, status: int, message: str, body: Any) -> None:
        sent = json.dumps({name: body}, default=str)[:1500]
        report.findings.setdefault((label, check, status), Finding(label, check, status, message[:800], sent))

    @generated(operation, mode, examples, seed_value)
    def one(case: Any, data: Any) -> None:
        if not negative and data.draw(st.booleans(), label="steer"):
            steer(case, socket.creds, data.draw)
        request_id = str(next(numbers))
        try:
            text = json.dumps({"request_id": request_id, name: case.body})
        except (TypeError, ValueError):
            return  # not JSON at all (raw bytes): a text frame cannot carry it
        report.cases[label] = report.cases.get(label, 0) + 1
        conn = socket.open()
        conn.send_text(text)
        answer = _answer(conn, request_id)
        if answer is None or answer.get("type") == "websocket.close":
            status = 0 if answer is None else int(answer.get("code", 0))
            report.count(label, status)
            finding("SocketClosed" if answer else "NoAnswer", status, f"answer: {answer}", case.body)
            socket.close()
            return
        status = int(answer.get("status", 200)) if "error" in answer else 200
        report.count(label, status)
        if status >= 500:
            finding("ServerError", status, str(answer.get("error")), case.body)
        elif negative and status < 400:
            finding("NegativeDataAccepted", status, "a body violating the schema was accepted", case.body)
        if status == 401:
            socket.close()
            socket.creds.renew()

    try:
        one()
    except Unsatisfiable:
        pass


def _answer(conn: WebSocketTestSession, request_id: str) -> dict[str, Any] | None:
    """The final reply to `request_id` (partial results and streamed tokens skipped), a close, or None."""
    deadline = time.monotonic() + ANSWER_S
    while (left := deadline - time.monotonic()) > 0:
        message = _receive(conn, left)
        if message is None:
            return None
        if message["type"] == "websocket.close":
            return message
        frame = json.loads(message["text"])
        if frame.get("request_id") != request_id:
            continue
        if "completion_partial" in frame or "chat_token" in frame:
            continue
        return frame
    return None
