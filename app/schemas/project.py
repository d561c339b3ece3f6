"""Project schemas: projects, members and invitations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, EmailStr, Field, field_validator

from app.schemas.common import Body, Message

Role = Literal["owner", "admin", "member"]
InvitedRole = Literal["admin", "member"]  # ownership is never handed out by invitation


def _non_blank(name: str) -> str:
    if not name.strip():
        raise ValueError("must not be blank")
    return name.strip()


class ProjectCreate(Body):
    """POST /api/project/create."""

    project_name: str = Field(min_length=1, max_length=200)


class ProjectActivate(Body):
    """PUT /api/project/activate."""

    project_id: uuid.UUID


class ProjectUpdate(Body):
    """PUT /api/project/update/{project_id}: rename."""

    project_name: str = Field(min_length=1, max_length=200)

    @field_validator("project_name")
    @classmethod
    def _name(cls, v: str) -> str:
        """A name of spaces only is no name."""
        return _non_blank(v)


class ProjectTokenResponse(Message):
    """Answer to create/activate: `project_token` is the project's id (what the plugin activates with and sends
    back within its session); the opaque token is in the `project_token` cookie."""

    project_token: str
    project_id: uuid.UUID


class ProjectPublic(BaseModel):
    """A project as its members see it, with the caller's role."""

    project_id: uuid.UUID
    project_name: str
    created_by: uuid.UUID | None
    created_at: datetime
    role: Role
    member_count: int


class ProjectResponse(Message):
    """Answer with one project."""

    project: ProjectPublic


class ProjectListResponse(Message):
    """Answer with the caller's projects, newest first."""

    projects: list[ProjectPublic]


class MemberPublic(BaseModel):
    """A member of a project."""

    user_id: uuid.UUID
    name: str
    email: str
    role: Role
    joined_at: datetime


class MembersResponse(Message):
    """Answer with a project's members, owner first."""

    members: list[MemberPublic]


class InvitationCreate(Body):
    """POST /api/project/invitation/create/{project_id}."""

    email: EmailStr
    role: InvitedRole = "member"


class InvitationPublic(BaseModel):
    """A pending invitation (its token is shown once, at creation)."""

    invitation_id: uuid.UUID
    project_id: uuid.UUID
    email: str
    role: InvitedRole
    invited_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime


class InvitationCreatedResponse(Message):
    """Answer to an invitation: the single-use token to hand to the invitee."""

    invitation: InvitationPublic
    token: str


class InvitationsResponse(Message):
    """Answer with a project's pending invitations."""

    invitations: list[InvitationPublic]


class InvitationAccept(Body):
    """POST /api/project/invitation/accept (the token in the body keeps it out of URLs and access logs)."""

    token: str = Field(min_length=1, max_length=256)
