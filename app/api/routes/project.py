"""Routes under /api/project: create and activate (the plugin's), then read, rename, delete, members, invitations."""

from __future__ import annotations

import uuid

from fastapi import Request, Response, status

from app.api.auth import session_token_of
from app.api.cookies import set_token_cookie
from app.api.deps import AuthDep, ClientAddress, CurrentUser, DbDep, PluginSession, RedisDep, StateDep
from app.api.routing import SlashTolerantRouter
from app.schemas.common import Message, error_responses
from app.schemas.project import (
    InvitationAccept,
    InvitationCreate,
    InvitationCreatedResponse,
    InvitationsResponse,
    MembersResponse,
    ProjectActivate,
    ProjectCreate,
    ProjectListResponse,
    ProjectResponse,
    ProjectTokenResponse,
    ProjectUpdate,
)
from app.services import projects

router = SlashTolerantRouter(prefix="/api/project", tags=["project"])
ERRORS = error_responses(401, 403, 404)
ACCEPT_ERRORS = error_responses(401, 403, 404, 409)


@router.post(
    "/create", status_code=status.HTTP_201_CREATED, response_model=ProjectTokenResponse, responses=ERRORS
)
async def create_project(
    body: ProjectCreate,
    request: Request,
    response: Response,
    session: PluginSession,
    state: StateDep,
    db: DbDep,
    redis: RedisDep,
    address: ClientAddress,
) -> ProjectTokenResponse:
    """Create a project with the caller as owner and activate it: sets the (opaque) `project_token` cookie.

    The answer's `project_token` is the project's id: the plugin keeps it and activates with
    `UUID.fromString(project_token)` later, and sends it back as its own `project_token` cookie, which this
    session's activation accepts (app/identity/tokens.py: effective_project_token).
    """
    project, token = await projects.create(
        db, redis, session, session_token_of(request), body.project_name, address=address
    )
    set_token_cookie(response, state.settings, "project_token", token)
    return ProjectTokenResponse(
        message="Project created successfully",
        project_token=str(project.project_id),
        project_id=project.project_id,
    )


@router.put("/activate", response_model=ProjectTokenResponse, responses=ERRORS)
async def activate_project(
    body: ProjectActivate,
    request: Request,
    response: Response,
    session: PluginSession,
    state: StateDep,
    db: DbDep,
    redis: RedisDep,
) -> ProjectTokenResponse:
    """Activate a project the caller is a member of in the session: sets the `project_token` cookie."""
    token = await projects.activate(db, redis, session, session_token_of(request), body.project_id)
    set_token_cookie(response, state.settings, "project_token", token)
    return ProjectTokenResponse(
        message="Project activated successfully",
        project_token=str(body.project_id),
        project_id=body.project_id,
    )


@router.get("/list", response_model=ProjectListResponse, responses=error_responses(401))
async def list_projects(auth: AuthDep, db: DbDep) -> ProjectListResponse:
    """The projects the caller is a member of, with the caller's role, newest first."""
    return ProjectListResponse(
        message="Projects retrieved successfully", projects=await projects.list_mine(db, auth.user_id)
    )


@router.get("/get/{project_id}", response_model=ProjectResponse, responses=ERRORS)
async def get_project(project_id: uuid.UUID, auth: AuthDep, db: DbDep) -> ProjectResponse:
    """One project; members only."""
    return ProjectResponse(
        message="Project retrieved successfully", project=await projects.get(db, auth.user_id, project_id)
    )


@router.put("/update/{project_id}", response_model=ProjectResponse, responses=ERRORS)
async def update_project(
    project_id: uuid.UUID, body: ProjectUpdate, auth: AuthDep, db: DbDep
) -> ProjectResponse:
    """Rename a project; its owner and admins only."""
    project = await projects.rename(db, auth.user_id, project_id, body.project_name)
    return ProjectResponse(message="Project updated successfully", project=project)


@router.delete("/delete/{project_id}", response_model=Message, responses=ERRORS)
async def delete_project(
    project_id: uuid.UUID, auth: AuthDep, db: DbDep, redis: RedisDep, address: ClientAddress
) -> Message:
    """Delete a project and revoke its project tokens; its owner only. Queries keep their rows, unlinked."""
    await projects.delete_project(db, redis, auth.user_id, project_id, address=address)
    return Message(message="Project deleted successfully")


@router.get("/members/{project_id}", response_model=MembersResponse, responses=ERRORS)
async def list_members(project_id: uuid.UUID, auth: AuthDep, db: DbDep) -> MembersResponse:
    """The members of a project, owner first; members only."""
    return MembersResponse(
        message="Members retrieved successfully", members=await projects.members(db, auth.user_id, project_id)
    )


@router.post(
    "/invitation/create/{project_id}",
    status_code=status.HTTP_201_CREATED,
    response_model=InvitationCreatedResponse,
    responses=error_responses(401, 403, 404, 409),
)
async def create_invitation(
    project_id: uuid.UUID,
    body: InvitationCreate,
    auth: AuthDep,
    state: StateDep,
    db: DbDep,
    address: ClientAddress,
) -> InvitationCreatedResponse:
    """Invite an email address (owner only); the answer holds the single-use token, shown only here."""
    invitation, token = await projects.invite(
        db, state.settings, auth.user_id, project_id, str(body.email), body.role, address=address
    )
    return InvitationCreatedResponse(
        message="Invitation created successfully",
        invitation=projects.invitation_public(invitation),
        token=token,
    )


@router.get("/invitation/list/{project_id}", response_model=InvitationsResponse, responses=ERRORS)
async def list_invitations(project_id: uuid.UUID, auth: AuthDep, db: DbDep) -> InvitationsResponse:
    """A project's pending invitations (owner only)."""
    pending = await projects.pending_invitations(db, auth.user_id, project_id)
    return InvitationsResponse(
        message="Invitations retrieved successfully",
        invitations=[projects.invitation_public(i) for i in pending],
    )


@router.delete("/invitation/revoke/{invitation_id}", response_model=Message, responses=ACCEPT_ERRORS)
async def revoke_invitation(
    invitation_id: uuid.UUID, auth: AuthDep, db: DbDep, address: ClientAddress
) -> Message:
    """Revoke a pending invitation (owner only)."""
    await projects.revoke_invitation(db, auth.user_id, invitation_id, address=address)
    return Message(message="Invitation revoked successfully")


@router.post("/invitation/accept", response_model=ProjectResponse, responses=ACCEPT_ERRORS)
async def accept_invitation(
    body: InvitationAccept, user: CurrentUser, db: DbDep, address: ClientAddress
) -> ProjectResponse:
    """Join the project of an invitation sent to the caller's email address; the token works once."""
    project = await projects.accept_invitation(db, user, body.token, address=address)
    return ProjectResponse(message="Invitation accepted: you are a member of the project", project=project)
