"""Schema pieces shared by every route."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Body(BaseModel):
    """A request body: unknown keys are ignored (the plugin sends extras such as `file_contents`)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class Message(BaseModel):
    """Every answer carries a human-readable message."""

    message: str


class ErrorResponse(BaseModel):
    """The shape of every error answer."""

    message: str
