"""Bodies that come either as JSON (API clients) or as an HTML form post (the pages behind mailed links)."""

from __future__ import annotations

import json
from typing import Any, TypeVar
from urllib.parse import parse_qs

from fastapi import Request
from pydantic import BaseModel, ValidationError

from app.errors import InvalidInput, Unprocessable

T = TypeVar("T", bound=BaseModel)
FORM = "application/x-www-form-urlencoded"


async def read_form_or_json(request: Request) -> tuple[dict[str, Any], bool]:
    """The body as a dict, and whether it was a form post; an empty body is an empty dict."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type == FORM:
        fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[-1] for k, v in fields.items()}, True
    if not raw.strip():
        return {}, False
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Unprocessable("Invalid request: the body must be a JSON object or a form") from None
    if not isinstance(data, dict):
        raise Unprocessable("Invalid request: the body must be a JSON object or a form")
    return data, False


def parse_as(model: type[T], data: dict[str, Any]) -> T:
    """Validate into a schema; 422 naming the fields (never echoing their values: one may be a password)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(exc.errors(include_input=False)) from None
