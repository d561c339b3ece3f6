"""Multi-file context update schemas (the plugin's wire shapes)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from app.schemas.common import Body, Message


class FileContextChange(Body):
    """One change of a file: 0-based, half-open old line range [start_line, end_line)."""

    change_type: Literal["insert", "update", "remove"]
    start_line: int = Field(ge=0)
    end_line: int = Field(ge=0)
    # Strings only: a line "42" or "null" stays text (no coercion of JSON numbers or nulls).
    new_lines: list[str] = Field(default_factory=list)

    @field_validator("new_lines")
    @classmethod
    def _single_lines(cls, lines: list[str]) -> list[str]:
        if any("\n" in line for line in lines):
            raise ValueError("each item of new_lines is one line: no line breaks inside")
        return lines


class MultiFileContextUpdate(Body):
    """POST /api/completion/multi-file-context/update."""

    context_updates: dict[str, list[FileContextChange]]


class MultiFileContextUpdateResponse(Message):
    """The lines of every file named in the request after the update ([] for a file left empty)."""

    data: dict[str, list[str]]
