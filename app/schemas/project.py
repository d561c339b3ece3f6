"""Project schemas."""

from __future__ import annotations

import uuid

from pydantic import Field

from app.schemas.common import Body, Message


class ProjectCreate(Body):
    """POST /api/project/create."""

    project_name: str = Field(min_length=1, max_length=200)


class ProjectActivate(Body):
    """PUT /api/project/activate."""

    project_id: uuid.UUID


class ProjectTokenResponse(Message):
    """Answer carrying a project token (also set as cookie)."""

    project_token: str
    project_id: uuid.UUID
