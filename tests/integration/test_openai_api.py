"""OpenAI's completions API (/openai/v1) through the official `openai` client, against the platform on a real
port with the shipped default model: the same completion as the plugin's route for a prefix/suffix pair
(streamed and not), stored like it; every bad request an OpenAI-style error the client raises as such."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from app.infra.encryption import opened
from app.infra.state import AppState
from db.tables import Context, ContextualTelemetry, Generation, MetaQuery, PluginVersion
from serve.embedded import ServiceUrls
from tests.utils import payloads as P
from tests.utils.api_tokens import bearer, user_with_token
from tests.utils.asgi_api import api_settings, model_id, running_api, settle
from tests.utils.http_server import served
from tests.utils.local_model import TINY_ENTRY, LocalModelGateway
from tests.utils.replicas import client_for, new_address, replica

MODEL = "code4me-tiny"
PREFIX = "import os\n\n\ndef read_file(path):\n    with open(path) as f:\n        return f."
# The cursor at a line's end (a multi-line completion) and mid-line (the rest of one line).
PAIRS = [(PREFIX, "\n\n\ndef main():\n    pass\n"), ("def add(a, b):\n    return a", ")\n")]
MANUAL = 1


@pytest.fixture(scope="module")
async def platform(
    services: ServiceUrls, data_dir: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, AppState, str]]:
    """The app with the shipped default model behind a real HTTP server; a client, the state, the base URL."""
    async with (
        running_api(
            services.database_url,
            services.redis_url,
            api_settings(data_dir),
            entries=[TINY_ENTRY],
            gateway=LocalModelGateway(),
        ) as (client, state),
        served(client) as base,
    ):
        yield client, state, base


def openai_client(base: str, token: str) -> openai.AsyncOpenAI:
    """The official client pointed at the platform's OpenAI base path, no retries (errors are the test)."""
    return openai.AsyncOpenAI(base_url=f"{base}/openai/v1", api_key=token, max_retries=0, timeout=60)


async def plugin_completion(
    c: httpx.AsyncClient, state: AppState, prefix: str, suffix: str
) -> dict[str, Any]:
    """The plugin route's answer for the same code and model (an explicit request, no file name)."""
    body = P.completion_request([model_id(state, MODEL)], prefix, suffix)
    body["context"]["file_name"] = None
    body["contextual_telemetry"].update(trigger_type_id=MANUAL, file_path=None)
    r = await c.post("/api/completion/request", json=body)
    assert r.status_code == 200, r.text
    (slot,) = r.json()["data"]["completions"]
    return dict(slot)


@pytest.mark.parametrize(("prefix", "suffix"), PAIRS)
async def test_the_openai_client_gets_the_plugins_completion_streamed_and_not(
    platform, prefix: str, suffix: str
) -> None:
    client, state, base = platform
    c, token, _ = await user_with_token(client)
    expected = await plugin_completion(c, state, prefix, suffix)
    assert expected["completion"].strip(), expected
    oa = openai_client(base, token)
    answer = await oa.completions.create(model=MODEL, prompt=prefix, suffix=suffix, logprobs=0)
    (choice,) = answer.choices
    assert choice.text == expected["completion"]
    assert answer.model == MODEL and answer.object == "text_completion" and answer.id.startswith("cmpl-")
    assert choice.finish_reason in ("stop", "length")
    # The chosen tokens' log-probabilities: their exp(mean) is the confidence the plugin got.
    assert choice.logprobs is not None and choice.logprobs.token_logprobs
    logprobs = choice.logprobs.token_logprobs
    assert math.exp(sum(logprobs) / len(logprobs)) == pytest.approx(expected["confidence"], rel=1e-3)
    # The gateway got the pair as the model's fill-in-the-middle call (the replica renders the template).
    call = state.gateway.calls[-1]
    assert (call.prefix, call.suffix) == (prefix, suffix)

    stream = await oa.completions.create(model=MODEL, prompt=prefix, suffix=suffix, stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(ch.choices[0].text for ch in chunks) == expected["completion"]
    assert [ch.choices[0].finish_reason for ch in chunks][-1] in ("stop", "length")
    assert all(ch.object == "text_completion" and ch.id == chunks[0].id for ch in chunks)
    await oa.close()


async def test_the_stream_is_openais_server_sent_events_also_where_continue_asks(platform) -> None:
    client, _, _ = platform
    _, token, _ = await user_with_token(client)
    # As Continue's `deepseek` provider sends an autocompletion (its stop words, the sampling options).
    stop = ["\n\n", "\r\n\r\n", "/src/", "#- coding: utf-8", "```", "\ndef", "\nclass", "<|endoftext|>"]
    body = {"model": MODEL, "prompt": PREFIX, "suffix": "\n", "stream": True, "max_tokens": 16, "stop": stop}
    body |= {"temperature": 0.01, "top_p": 1, "frequency_penalty": 0, "presence_penalty": 0}
    texts = []
    for path in ("/openai/v1/completions", "/openai/v1/beta/completions"):
        r = await client.post(path, json=body, headers=bearer(token))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.text.split("\n\n") if line]
        assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
        texts.append("".join(json.loads(e[6:])["choices"][0]["text"] for e in events[:-1]))
        # The pipeline's stages, as the plugin's route reports them, before the app's own time.
        assert {"prepare", "models", "events", "app"} <= {
            part.split(";")[0].strip() for part in r.headers["server-timing"].split(",")
        }
    assert texts[0] and texts[0] == texts[1]
    r = await client.post("/openai/v1/completions", json={**body, "stream": False}, headers=bearer(token))
    assert r.status_code == 200 and "models;dur=" in r.headers["server-timing"]


async def test_a_completion_is_stored_as_the_users_query_with_its_generation(platform) -> None:
    client, state, base = platform
    _, token, _ = await user_with_token(client)
    oa = openai_client(base, token)
    answer = await oa.completions.create(model=MODEL, prompt=PREFIX, suffix="\n", max_tokens=1, stop=["\n"])
    await oa.close()
    (choice,) = answer.choices
    # One token asked for: at most one generated, cut by the token limit unless the model stopped first.
    assert choice.finish_reason in ("length", "stop")
    assert state.gateway.calls[-1].max_new_tokens == 1 and "\n" in state.gateway.calls[-1].stop_sequences
    meta_query_id = uuid.UUID(answer.id[5:])
    await settle(state)
    async with state.sessionmaker() as db:
        meta = await db.get(MetaQuery, meta_query_id)
        assert meta is not None and meta.query_type == "completion"
        assert meta.session_id is None and meta.project_id is None  # an API token's call
        generation = await db.get(Generation, (meta_query_id, model_id(state, MODEL)))
        assert generation is not None and opened(generation, state.keyring)["completion"] == choice.text
        context = await db.get(Context, meta.context_id)
        assert context is not None
        texts = opened(context, state.keyring)
        assert (texts["prefix"], texts["suffix"]) == (PREFIX, "\n")
        contextual = await db.get(ContextualTelemetry, meta.contextual_telemetry_id)
        assert contextual is not None
        version = await db.get(PluginVersion, contextual.version_id)
    # The client's User-Agent (`AsyncOpenAI/Python 3.60.0`) is its plugin version, of the OpenAI ide type.
    assert version is not None and (version.version_name, version.ide_type) == (
        "AsyncOpenAI/Python",
        "OpenAI",
    )


async def test_storage_preferences_and_redaction_apply_as_for_the_plugin(platform) -> None:
    client, state, base = platform
    _, token, _ = await user_with_token(client, preference={"store_context": False})
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    oa = openai_client(base, token)
    answer = await oa.completions.create(model=MODEL, prompt=f"key = '{secret}'\nprint(", suffix=")\n")
    await oa.close()
    assert secret not in state.gateway.calls[-1].prefix  # REDACT_MODEL_INPUT's default
    await settle(state)
    async with state.sessionmaker() as db:
        meta = await db.get(MetaQuery, uuid.UUID(answer.id[5:]))
    assert meta is not None and meta.context_id is None


async def test_models_lists_the_served_completion_models(platform) -> None:
    client, _, base = platform
    _, token, _ = await user_with_token(client)
    oa = openai_client(base, token)
    models = await oa.models.list()
    await oa.close()
    assert [m.id for m in models.data] == [MODEL] and models.data[0].object == "model"


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    """The `error` object of an OpenAI-style error answer (the client keeps it as `body`)."""
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"] == exc.body
    return dict(body["error"])


async def test_bad_model_oversized_and_bad_params_are_openai_errors(platform) -> None:
    client, state, base = platform
    _, token, _ = await user_with_token(client)
    oa = openai_client(base, token)
    with pytest.raises(openai.NotFoundError) as nf:
        await oa.completions.create(model="gpt-3.5-turbo-instruct", prompt=PREFIX)
    assert _error(nf.value)["code"] == "model_not_found" and _error(nf.value)["param"] == "model"
    # Over MAX_CONTEXT_CHARS: 400 as OpenAI answers a prompt over the context length.
    too_long = "x" * (state.settings.max_context_chars + 1)
    with pytest.raises(openai.BadRequestError) as big:
        await oa.completions.create(model=MODEL, prompt=too_long)
    assert _error(big.value)["code"] == "context_length_exceeded"
    # Over MAX_BODY_BYTES: refused before the body is read, in the same shape.
    huge = "x" * (state.settings.max_body_bytes + 1)
    with pytest.raises(openai.BadRequestError) as body_limit:
        await oa.completions.create(model=MODEL, prompt=huge)
    assert _error(body_limit.value)["code"] == "context_length_exceeded"
    for params, param in [
        ({"temperature": 5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [str(i) for i in range(17)]}, "stop"),
        ({"n": 2}, "n"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),  # no alternatives are kept: refused, not faked
        ({"prompt": [1, 2, 3]}, "prompt"),
    ]:
        kwargs: dict[str, Any] = {"model": MODEL, "prompt": PREFIX, **params}
        with pytest.raises(openai.BadRequestError) as bad:
            await oa.completions.create(**kwargs)
        error = _error(bad.value)
        assert error["type"] == "invalid_request_error" and (error["param"] or "").startswith(param), error
    await oa.close()
    missing = openai.AsyncOpenAI(base_url=f"{base}/openai/v1", api_key="c4m_" + "0" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        await missing.models.list()
    assert _error(unauthorized.value)["code"] == "invalid_api_key"
    await missing.close()
    # The plugin's routes keep their own error body.
    r = await client.post("/api/completion/request", json={})
    assert "message" in r.json() and "error" not in r.json()


async def test_openai_calls_are_rate_limited_per_user_with_tabbys(services) -> None:
    async with replica(services, rate_limit_default=1000, rate_limit_auth=1000, rate_limit_completion=3) as (
        app,
        _,
    ):
        address = new_address()
        _, token, _ = await user_with_token(client_for(app, address))
        anonymous = client_for(app, address)
        event = {"type": "view", "completion_id": f"cmpl-{uuid.uuid4()}", "choice_index": 0}
        body = {"model": "nonexistent", "prompt": "x"}
        statuses = [
            (await anonymous.post("/v1/events", json=event, headers=bearer(token))).status_code,
            (await anonymous.post("/openai/v1/completions", json=body, headers=bearer(token))).status_code,
            (await anonymous.post("/openai/v1/completions", json=body, headers=bearer(token))).status_code,
        ]
        assert statuses == [404, 404, 404]
        r = await anonymous.post("/openai/v1/completions", json=body, headers=bearer(token))
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        error = r.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
