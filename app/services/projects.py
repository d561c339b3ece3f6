"""Projects: creation and activation, members only."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import tokens
from app.errors import Forbidden, NotFound
from app.settings import Settings
from db.tables import Project, ProjectMember, SessionProject


async def create(
    db: AsyncSession, redis: Redis, settings: Settings, session: tokens.SessionInfo, session_token: str, name: str
) -> tuple[Project, str]:
    """Create a project owned by the caller and activate it in the session."""
    project = Project(project_name=name.strip() or "Untitled project", created_by=session.user_id)
    db.add(project)
    await db.flush()
    db.add(ProjectMember(project_id=project.project_id, user_id=session.user_id, role="owner"))
    db.add(SessionProject(session_id=session.session_id, project_id=project.project_id))
    await db.commit()
    token = await tokens.issue_project(
        redis, session.user_id, project.project_id, session_token, settings.project_token_ttl_s
    )
    return project, token


async def activate(
    db: AsyncSession,
    redis: Redis,
    settings: Settings,
    session: tokens.SessionInfo,
    session_token: str,
    project_id: uuid.UUID,
) -> str:
    """A project token for an existing project; only its members may activate it."""
    project = await db.get(Project, project_id)
    if project is None:
        raise NotFound("Project not found")
    if await db.get(ProjectMember, (project_id, session.user_id)) is None:
        raise Forbidden("You are not a member of this project")
    await db.execute(
        insert(SessionProject)
        .values(session_id=session.session_id, project_id=project_id)
        .on_conflict_do_nothing()
    )
    await db.commit()
    return await tokens.issue_project(redis, session.user_id, project_id, session_token, settings.project_token_ttl_s)
