"""Schema pieces shared by every route."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# Integers bound by the columns they end up in (or are compared with): a bigger number is a 422,
# not an overflow inside the database driver.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
Int32 = Annotated[int, Field(ge=-(2**31), le=INT32_MAX)]
NonNegativeInt32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
NonNegativeInt64 = Annotated[int, Field(ge=0, le=INT64_MAX)]


def unstorable_text(value: Any, where: str = "") -> str | None:
    """The first string (or key) in a JSON value with NUL or an unpaired surrogate (unstorable), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"{where or 'text'} contains a NUL character (\\u0000)"
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{where or 'text'} contains an unpaired surrogate (not valid Unicode)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{where}.{str(key)[:100]}" if where else str(key)[:100]
            problem = unstorable_text(key, f"a key of {where or 'the body'}") or unstorable_text(item, inner)
            if problem:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = unstorable_text(item, f"{where}[{index}]")
            if problem:
                return problem
    return None


class Body(BaseModel):
    """A request body: unknown keys are ignored (the plugin sends extras such as `file_contents`)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        """Refuse text the database cannot hold with a 422 naming the field, instead of failing at insert."""
        problem = unstorable_text(data)
        if problem:
            raise PydanticCustomError("unstorable_text", "{problem}", {"problem": problem})
        return data


class Message(BaseModel):
    """Every answer carries a human-readable message."""

    message: str


class ErrorResponse(BaseModel):
    """The shape of every error answer."""

    message: str


class FieldError(BaseModel):
    """One invalid field: where, what is wrong, and the error type (never the offending value)."""

    loc: list[str]
    msg: str
    type: str


class ValidationErrorResponse(ErrorResponse):
    """The 422 answer for a body, path or query that does not match the schema."""

    details: list[FieldError] = []


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring `{"message"}` errors (422 with field details)."""
    return {code: {"model": ValidationErrorResponse if code == 422 else ErrorResponse} for code in codes}
