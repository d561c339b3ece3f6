"""The OpenAI-compatible API's pure parts: its error shape and statuses, finish reasons, the event stream."""

from __future__ import annotations

import json

import pytest

from app.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    openai_error,
    shaped,
)
from app.schemas.openai_api import CompletionChoice, OpenAICompletion
from app.services.openai_api import finish_reason, stream_events


@pytest.mark.parametrize(
    ("problem", "status", "kind", "code", "param"),
    [
        (NotFound("no such model", param="model"), 404, "invalid_request_error", "model_not_found", "model"),
        (NotFound("no such thing"), 404, "invalid_request_error", "not_found", None),
        (PayloadTooLarge("too long"), 400, "invalid_request_error", "context_length_exceeded", None),
        (Unprocessable("bad"), 400, "invalid_request_error", "invalid_value", None),
        (
            InvalidInput([{"loc": ["body", "temperature"], "msg": "too big", "type": "less_than_equal"}]),
            400,
            "invalid_request_error",
            "invalid_value",
            "temperature",
        ),
        (Unauthorized("who"), 401, "invalid_request_error", "invalid_api_key", None),
        (Forbidden("no"), 403, "invalid_request_error", "permission_denied", None),
        (RateLimited("slow down"), 429, "rate_limit_error", "rate_limit_exceeded", None),
        (ServiceUnavailable("down"), 503, "server_error", "service_unavailable", None),
    ],
)
def test_errors_have_openais_shape_and_statuses(
    problem: DomainError, status: int, kind: str, code: str, param: str | None
) -> None:
    got_status, body = openai_error(problem)
    assert got_status == status
    assert body == {"error": {"message": problem.message, "type": kind, "param": param, "code": code}}


def test_only_openai_paths_get_openais_shape() -> None:
    problem = Unprocessable("bad")
    assert shaped(problem, "/openai/v1/completions")[0] == 400
    assert shaped(problem, "/v1/completions") == (422, {"message": "bad"})
    assert shaped(problem, "/api/openai/v1") == (422, {"message": "bad"})


@pytest.mark.parametrize(
    ("stopped_by", "reason"),
    [
        ("length", "length"),
        ("time_budget", "length"),
        ("newline", "stop"),
        ("eos", "stop"),
        ("stop_sequence", "stop"),
    ],
)
def test_finish_reasons(stopped_by: str, reason: str) -> None:
    assert finish_reason(stopped_by) == reason


def test_the_stream_is_the_text_then_its_finish_then_done() -> None:
    choice = CompletionChoice(index=0, text="read()", logprobs=None, finish_reason="stop")
    completion = OpenAICompletion(id="cmpl-1", created=7, model="m", choices=[choice])
    events = list(stream_events(completion))
    assert events[-1] == "data: [DONE]\n\n" and all(e.endswith("\n\n") for e in events)
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert [c["choices"][0]["text"] for c in chunks] == ["read()", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, "stop"]
    assert all(c["id"] == "cmpl-1" and c["object"] == "text_completion" for c in chunks)
