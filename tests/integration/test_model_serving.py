"""Model serving on a real local Ray Serve: side by side, failures, batching, cancellation, chat, metrics, live update."""

from __future__ import annotations

import threading
import time
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
from pyhocon import ConfigFactory
from ray import serve

from app.protocol import ChatCall, ChatMessage, CompletionCall
from tests.utils import payloads as P

APP = "code4me"


def signed_in(base_url: str) -> tuple[httpx.Client, dict[str, int]]:
    """A client through create -> authenticate -> acquire -> project, and the config's model ids by name."""
    c = httpx.Client(base_url=base_url, timeout=60)
    email = P.new_email()
    assert c.post("/api/user/create", json=P.user_create(email)).status_code == 201
    r = c.post("/api/user/authenticate", json=P.authenticate(email))
    models = ConfigFactory.parse_string(r.json()["config"]).get("config.models.available")
    assert c.get("/api/session/acquire").status_code == 200
    assert c.post("/api/project/create", json={"project_name": "serving"}).status_code == 201
    return c, {m["name"]: int(m["id"]) for m in models}


def handle(model: str):  # type: ignore[no-untyped-def]
    return serve.get_deployment_handle(f"model-{model}", app_name=APP)


def call(
    prefix: str, suffix: str = "", *, single_line: bool = True, max_new_tokens: int | None = None
) -> CompletionCall:
    """A completion call as the ingress sends it to a model deployment."""
    return CompletionCall(prefix, suffix, "", (), (), single_line, max_new_tokens)


def chat_call(question: str) -> ChatCall:
    """A one-question conversation."""
    return ChatCall((ChatMessage("user", question),), max_new_tokens=None)


def multiline_request(model_ids: list[int]) -> dict:
    """A manual trigger at the end of a line: the model may write several lines."""
    body = P.completion_request(model_ids, prefix="def main():\n", suffix="")
    body["contextual_telemetry"]["trigger_type_id"] = 1
    return body


def test_side_by_side_with_a_failing_model(serve_app: str) -> None:
    c, ids = signed_in(serve_app)
    r = c.post(
        "/api/completion/request",
        json=P.completion_request([ids["code4me-tiny"], ids["code4me-tiny-twin"], ids["broken"]]),
    )
    assert r.status_code == 200, r.text
    tiny, twin, broken = r.json()["data"]["completions"]
    assert tiny["model_name"] == "code4me-tiny" and twin["model_name"] == "code4me-tiny-twin"
    assert tiny["completion"] == twin["completion"]  # same weights, greedy decoding
    assert "message" not in tiny
    assert broken == {
        "model_id": ids["broken"],
        "model_name": "broken",
        "completion": "",
        "generation_time": 0,
        "confidence": 0.0,
        "message": "Completion for model failed",
    }
    # The failure is stored per model too.
    qid = r.json()["data"]["meta_query_id"]
    again = c.get(f"/api/completion/{qid}").json()["data"]["completions"]
    assert {s["model_name"] for s in again} == {"code4me-tiny", "code4me-tiny-twin", "broken"}


def test_batched_greedy_outputs_equal_single_runs() -> None:
    h = handle("code4me-tiny")
    prefixes = [
        "import os\n\n\ndef main():\n    path = os.path.",
        "class Stack:\n    def __init__(self):\n        self.items = ",
        "for i in range(",
        "def add(a, b):\n    return a",
        "import json\n\ndata = json.loads(text)\nfor key, value in data.",
        "x = [1, 2, 3]\ny = sum(",
    ]
    payloads = [call(p, "\n", single_line=True) for p in prefixes]
    alone = [h.complete.remote(p).result(timeout_s=60) for p in payloads]
    assert all(r.batch_size == 1 for r in alone)
    together = [h.complete.remote(p) for p in payloads]
    together = [r.result(timeout_s=60) for r in together]
    assert max(r.batch_size for r in together) > 1, "concurrent requests were not batched"
    assert [r.completion for r in together] == [r.completion for r in alone]
    for a, b in zip(alone, together, strict=True):
        assert b.confidence == pytest.approx(a.confidence, rel=1e-3, abs=1e-6)


def test_a_request_joins_a_running_batch_instead_of_waiting_for_it() -> None:
    h = handle("long-runner")
    long = h.complete.remote(call("def main():\n", single_line=False))
    try:
        time.sleep(1.0)  # the long row is decoding (up to 2,048 tokens)
        began = time.monotonic()
        short = h.complete.remote(call("x = ", single_line=False, max_new_tokens=4)).result(timeout_s=30)
        waited = time.monotonic() - began
        # Without joining, the short request would have waited for the long row and run alone (batch_size 1).
        assert short.batch_size >= 2 and 0 < short.tokens_generated <= 4
        assert waited < 5.0
    finally:
        long.cancel()


def _wait_for(predicate, timeout_s: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_client_disconnect_cancels_generation(serve_app: str) -> None:
    c, ids = signed_in(serve_app)
    h = handle("long-runner")
    before = h.stats.remote().result()
    with pytest.raises(httpx.ReadTimeout):
        c.post("/api/completion/request", json=multiline_request([ids["long-runner"]]), timeout=1.5)
    assert _wait_for(lambda: h.stats.remote().result()["cancelled"] > before["cancelled"])
    assert _wait_for(lambda: any(x["stopped_by"] == "cancelled" for x in h.stats.remote().result()["recent"]))
    cancelled = [x for x in h.stats.remote().result()["recent"] if x["stopped_by"] == "cancelled"]
    assert cancelled[-1]["tokens_generated"] < 2048  # stopped long before its token limit


def test_superseding_request_of_a_session_cancels_the_older(serve_app: str) -> None:
    c, ids = signed_in(serve_app)
    first: dict = {}

    def older() -> None:
        first["response"] = c.post("/api/completion/request", json=multiline_request([ids["long-runner"]]))

    t = threading.Thread(target=older)
    t.start()
    time.sleep(1.0)
    newer = c.post("/api/completion/request", json=P.completion_request([ids["code4me-tiny"]]))
    t.join(timeout=60)
    assert newer.status_code == 200, newer.text
    assert first["response"].status_code == 409, first["response"].text
    assert "Superseded" in first["response"].json()["message"]


def test_chat_model_streams_tokens() -> None:
    h = handle("chatty").options(stream=True)
    pieces = list(h.chat.remote(chat_call("Write a function that adds two numbers.")))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip()
    with pytest.raises(Exception, match="not a chat model"):
        list(handle("code4me-tiny").options(stream=True).chat.remote(chat_call("hi")))


def test_metrics_are_exported_to_prometheus(metrics_port: int) -> None:
    handle("code4me-tiny").complete.remote(call("x = ")).result(timeout_s=60)

    def scraped() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        return all(
            name in text
            for name in (
                "code4me_model_requests",
                "code4me_model_latency_ms",
                "code4me_model_batch_size",
                "code4me_model_tokens_generated",
            )
        )

    assert _wait_for(scraped, timeout_s=60)


def test_live_registry_update_keeps_serving(
    serve_app: str, app_settings, test_models: dict[str, Path]
) -> None:  # type: ignore[no-untyped-def]
    from serve.builder import build_application
    from tests.integration.conftest import TINY_MODEL, registry

    c, ids = signed_in(serve_app)
    failures: list[str] = []
    successes = 0
    stop = threading.Event()

    def keep_requesting() -> None:
        nonlocal successes
        while not stop.is_set():
            try:
                r = c.post("/api/completion/request", json=P.completion_request([ids["code4me-tiny"]]))
                if (
                    r.status_code == 200
                    and r.json()["data"]["completions"][0]["model_name"] == "code4me-tiny"
                ):
                    successes += 1
                else:
                    failures.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                failures.append(repr(exc))

    worker = threading.Thread(target=keep_requesting)
    worker.start()
    try:
        time.sleep(1.0)
        new_entry = {**TINY_MODEL, "name": f"added-{uuid.uuid4().hex[:6]}", "id": None, "is_default": False}
        app = build_application(
            {"models": [*registry(test_models), new_entry], "embedding": {"enabled": True}},
            settings=app_settings,
            migrate=False,
        )
        serve.run(app, name=APP, route_prefix="/")
        time.sleep(2.0)
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not failures, failures[:5]
    assert successes >= 3
    status = serve.status().applications[APP].deployments
    assert status[f"model-{new_entry['name']}"].status.value == "HEALTHY"
    c2, ids2 = signed_in(serve_app)
    r = c2.post("/api/completion/request", json=P.completion_request([ids2[new_entry["name"]]]))
    assert r.status_code == 200 and r.json()["data"]["completions"][0]["model_name"] == new_entry["name"]
