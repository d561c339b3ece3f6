"""Routes under /api/project."""

from __future__ import annotations

from fastapi import Request, Response, status

from app.cookies import set_token_cookie
from app.deps import DbDep, RedisDep, SessionDep, StateDep, session_token_of
from app.routing import SlashTolerantRouter
from app.schemas.common import ErrorResponse
from app.schemas.project import ProjectActivate, ProjectCreate, ProjectTokenResponse
from app.services import projects

router = SlashTolerantRouter(prefix="/api/project", tags=["project"])
ERRORS = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 404: {"model": ErrorResponse}}


@router.post("/create", status_code=status.HTTP_201_CREATED, response_model=ProjectTokenResponse, responses=ERRORS)
async def create_project(
    body: ProjectCreate, request: Request, response: Response, session: SessionDep, state: StateDep, db: DbDep, redis: RedisDep
) -> ProjectTokenResponse:
    """Create a project with the caller as owner; sets the `project_token` cookie."""
    project, token = await projects.create(db, redis, state.settings, session, session_token_of(request), body.project_name)
    set_token_cookie(response, state.settings, "project_token", token, state.settings.project_token_ttl_s)
    return ProjectTokenResponse(message="Project created successfully", project_token=token, project_id=project.project_id)


@router.put("/activate", response_model=ProjectTokenResponse, responses=ERRORS)
async def activate_project(
    body: ProjectActivate, request: Request, response: Response, session: SessionDep, state: StateDep, db: DbDep, redis: RedisDep
) -> ProjectTokenResponse:
    """Activate a project the caller is a member of; sets the `project_token` cookie."""
    token = await projects.activate(db, redis, state.settings, session, session_token_of(request), body.project_id)
    set_token_cookie(response, state.settings, "project_token", token, state.settings.project_token_ttl_s)
    return ProjectTokenResponse(message="Project activated successfully", project_token=token, project_id=body.project_id)
