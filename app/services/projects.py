"""Projects: creation, activation, reading, renaming, deletion, members and invitations; members only.

Access rule, the same for every call: an unknown project is 404; a project the caller is not a member
of is 403 (project ids are random UUIDs, so admitting that one exists reveals nothing useful). Members
read and activate; the owner and admins rename; only the owner deletes, invites and revokes.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta
from typing import cast

from redis.asyncio import Redis
from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.context import live_state
from app.errors import Conflict, Forbidden, NotFound
from app.identity import tokens
from app.infra.settings import Settings
from app.schemas.project import InvitationPublic, InvitedRole, MemberPublic, ProjectPublic, Role
from app.services import audit
from app.services.audit import AuditAction
from db.tables import Project, ProjectInvitation, ProjectMember, SessionProject, User, utcnow

MANAGERS = ("owner", "admin")


async def create(
    db: AsyncSession,
    redis: Redis,
    session: tokens.SessionInfo,
    session_token: str,
    name: str,
    *,
    address: str,
) -> tuple[Project, str]:
    """Create a project owned by the caller (audited: its first membership) and activate it in the session."""
    project = Project(project_name=name.strip() or "Untitled project", created_by=session.user_id)
    db.add(project)
    await db.flush()
    db.add(ProjectMember(project_id=project.project_id, user_id=session.user_id, role="owner"))
    db.add(SessionProject(session_id=session.session_id, project_id=project.project_id))
    await audit.record(
        db,
        AuditAction.PROJECT_CREATE,
        actor=session.user_id,
        address=address,
        target=audit.project_target(project.project_id),
        detail={"role": "owner"},
    )
    await db.commit()
    token = await tokens.issue_project(redis, session.user_id, project.project_id, session_token)
    return project, token


async def membership(
    db: AsyncSession, project_id: uuid.UUID, user_id: uuid.UUID
) -> tuple[Project, ProjectMember]:
    """The project and the caller's membership; 404 when there is no such project, 403 for non-members."""
    project = await db.get(Project, project_id)
    if project is None:
        raise NotFound("Project not found")
    member = await db.get(ProjectMember, (project_id, user_id))
    if member is None:
        raise Forbidden("You are not a member of this project")
    return project, member


def _require(member: ProjectMember, roles: tuple[str, ...], action: str) -> None:
    if member.role not in roles:
        who = " or ".join(f"an {r}" if r[0] in "aeiou" else f"a {r}" for r in roles)
        raise Forbidden(f"Only {who} of the project may {action}")


async def _member_count(db: AsyncSession, project_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(ProjectMember).where(col(ProjectMember.project_id) == project_id)
    return int((await db.execute(query)).scalar_one())


def _public(project: Project, role: str, member_count: int) -> ProjectPublic:
    return ProjectPublic(
        project_id=project.project_id,
        project_name=project.project_name,
        created_by=project.created_by,
        created_at=project.created_at,
        role=cast(Role, role),
        member_count=member_count,
    )


async def activate(
    db: AsyncSession,
    redis: Redis,
    session: tokens.SessionInfo,
    session_token: str,
    project_id: uuid.UUID,
) -> str:
    """A project token for an existing project; only its members may activate it."""
    await membership(db, project_id, session.user_id)
    await db.execute(
        insert(SessionProject)
        .values(session_id=session.session_id, project_id=project_id)
        .on_conflict_do_nothing()
    )
    await db.commit()
    return await tokens.issue_project(redis, session.user_id, project_id, session_token)


async def get(db: AsyncSession, user_id: uuid.UUID, project_id: uuid.UUID) -> ProjectPublic:
    """One project the caller is a member of."""
    project, member = await membership(db, project_id, user_id)
    return _public(project, member.role, await _member_count(db, project_id))


async def list_mine(db: AsyncSession, user_id: uuid.UUID) -> list[ProjectPublic]:
    """Every project the caller is a member of, newest first."""
    counts = (
        select(col(ProjectMember.project_id), func.count().label("n"))
        .group_by(col(ProjectMember.project_id))
        .subquery()
    )
    query = (
        select(Project, col(ProjectMember.role), counts.c.n)
        .join(ProjectMember, col(ProjectMember.project_id) == col(Project.project_id))
        .join(counts, counts.c.project_id == col(Project.project_id))
        .where(col(ProjectMember.user_id) == user_id)
        .order_by(col(Project.created_at).desc(), col(Project.project_id))
    )
    return [_public(project, role, n) for project, role, n in (await db.execute(query)).all()]


async def rename(db: AsyncSession, user_id: uuid.UUID, project_id: uuid.UUID, name: str) -> ProjectPublic:
    """Rename a project (owner or admin)."""
    project, member = await membership(db, project_id, user_id)
    _require(member, MANAGERS, "rename it")
    project.project_name = name
    await db.commit()
    return _public(project, member.role, await _member_count(db, project_id))


async def delete_project(
    db: AsyncSession, redis: Redis, user_id: uuid.UUID, project_id: uuid.UUID, *, address: str
) -> None:
    """Delete a project (owner only, audited) with its memberships and invitations, and revoke its project
    tokens."""
    _, member = await membership(db, project_id, user_id)
    _require(member, ("owner",), "delete it")
    members_before = await _member_count(db, project_id)
    # Tokens go first and again after the delete: a token activated in between must not outlive the project.
    await tokens.revoke_project_tokens(redis, project_id)
    await db.execute(delete(Project).where(col(Project.project_id) == project_id))
    await audit.record(
        db,
        AuditAction.PROJECT_DELETE,
        actor=user_id,
        address=address,
        target=audit.project_target(project_id),
        detail={"members": members_before},
    )
    await db.commit()
    await tokens.revoke_project_tokens(redis, project_id)
    # After the tokens: no update can bring the members' live code back.
    await live_state.drop_project(redis, project_id)


async def members(db: AsyncSession, user_id: uuid.UUID, project_id: uuid.UUID) -> list[MemberPublic]:
    """The members of a project the caller belongs to: owner, admins, members, each by join time."""
    await membership(db, project_id, user_id)
    rank = {"owner": 0, "admin": 1}
    query = (
        select(User, ProjectMember)
        .join(ProjectMember, col(ProjectMember.user_id) == col(User.user_id))
        .where(col(ProjectMember.project_id) == project_id)
    )
    rows = sorted((await db.execute(query)).all(), key=lambda r: (rank.get(r[1].role, 2), r[1].joined_at))
    return [
        MemberPublic(
            user_id=u.user_id, name=u.name, email=u.email, role=cast(Role, m.role), joined_at=m.joined_at
        )
        for u, m in rows
    ]


def token_hash(token: str) -> str:
    """What is stored of an invitation token."""
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_public(inv: ProjectInvitation) -> InvitationPublic:
    """The client view of an invitation (never its token hash)."""
    return InvitationPublic(
        invitation_id=inv.invitation_id,
        project_id=inv.project_id,
        email=inv.email,
        role=cast(InvitedRole, inv.role),
        invited_by=inv.invited_by,
        created_at=inv.created_at,
        expires_at=inv.expires_at,
    )


def _pending(project_id: uuid.UUID) -> tuple[ColumnElement[bool], ...]:
    """Conditions of a pending invitation of a project: neither used, revoked nor expired."""
    return (
        col(ProjectInvitation.project_id) == project_id,
        col(ProjectInvitation.accepted_at).is_(None),
        col(ProjectInvitation.revoked_at).is_(None),
        col(ProjectInvitation.expires_at) > func.now(),
    )


async def invite(
    db: AsyncSession,
    settings: Settings,
    user_id: uuid.UUID,
    project_id: uuid.UUID,
    email: str,
    role: str,
    *,
    address: str,
) -> tuple[ProjectInvitation, str]:
    """Invite an email address (owner only, audited without the address); a new invitation replaces a pending
    one for the same address."""
    _, member = await membership(db, project_id, user_id)
    _require(member, ("owner",), "invite")
    already = await db.execute(
        select(col(ProjectMember.user_id))
        .join(User, col(User.user_id) == col(ProjectMember.user_id))
        .where(col(ProjectMember.project_id) == project_id, func.lower(col(User.email)) == email.lower())
    )
    if already.first() is not None:
        raise Conflict("This email address belongs to a member of the project already")
    now = utcnow()
    # A lost token is replaced by inviting again: the older pending invitation stops working.
    await db.execute(
        update(ProjectInvitation)
        .where(*_pending(project_id), func.lower(col(ProjectInvitation.email)) == email.lower())
        .values(revoked_at=now)
    )
    token = tokens.new_token()
    invitation = ProjectInvitation(
        project_id=project_id,
        email=email,
        role=role,
        token_hash=token_hash(token),
        invited_by=user_id,
        created_at=now,
        expires_at=now + timedelta(seconds=settings.project_invitation_ttl_s),
    )
    db.add(invitation)
    await db.flush()
    await audit.record(
        db,
        AuditAction.PROJECT_INVITE,
        actor=user_id,
        address=address,
        target=audit.project_target(project_id),
        detail={"invitation_id": str(invitation.invitation_id), "role": role},
    )
    await db.commit()
    return invitation, token


async def pending_invitations(
    db: AsyncSession, user_id: uuid.UUID, project_id: uuid.UUID
) -> list[ProjectInvitation]:
    """A project's pending invitations, newest first (owner only)."""
    _, member = await membership(db, project_id, user_id)
    _require(member, ("owner",), "see its invitations")
    query = (
        select(ProjectInvitation)
        .where(*_pending(project_id))
        .order_by(col(ProjectInvitation.created_at).desc())
    )
    return list((await db.execute(query)).scalars())


async def revoke_invitation(
    db: AsyncSession, user_id: uuid.UUID, invitation_id: uuid.UUID, *, address: str
) -> None:
    """Revoke a pending invitation (owner of its project only, audited)."""
    invitation = await db.get(ProjectInvitation, invitation_id)
    if invitation is None:
        raise NotFound("Invitation not found")
    _, member = await membership(db, invitation.project_id, user_id)
    _require(member, ("owner",), "revoke its invitations")
    if invitation.accepted_at is not None:
        raise Conflict("The invitation was accepted already")
    if invitation.revoked_at is None:
        invitation.revoked_at = utcnow()
        await audit.record(
            db,
            AuditAction.PROJECT_INVITATION_REVOKE,
            actor=user_id,
            address=address,
            target=audit.project_target(invitation.project_id),
            detail={"invitation_id": str(invitation_id)},
        )
        await db.commit()


async def accept_invitation(db: AsyncSession, user: User, token: str, *, address: str) -> ProjectPublic:
    """Join a project with an invitation token sent to the caller's email address (audited); the token works
    once."""
    result = await db.execute(
        select(ProjectInvitation).where(col(ProjectInvitation.token_hash) == token_hash(token))
    )
    invitation = result.scalar_one_or_none()
    if invitation is None:
        raise NotFound("Invitation not found")
    if invitation.email.lower() != user.email.lower():
        raise Forbidden("This invitation was sent to another email address")
    if invitation.revoked_at is not None:
        raise Conflict("The invitation was revoked")
    if invitation.accepted_at is not None:
        raise Conflict("The invitation was used already")
    if invitation.expires_at <= utcnow():
        raise Conflict("The invitation has expired")
    if await db.get(ProjectMember, (invitation.project_id, user.user_id)) is not None:
        raise Conflict("You are a member of this project already")
    # Consumed with a conditional update: of two concurrent accepts, exactly one wins.
    consumed = await db.execute(
        update(ProjectInvitation)
        .where(
            col(ProjectInvitation.invitation_id) == invitation.invitation_id, *_pending(invitation.project_id)
        )
        .values(accepted_at=func.now(), accepted_by=user.user_id)
        .returning(col(ProjectInvitation.invitation_id))
    )
    if consumed.first() is None:
        await db.rollback()
        raise Conflict("The invitation was used already")
    await db.execute(
        insert(ProjectMember)
        .values(project_id=invitation.project_id, user_id=user.user_id, role=invitation.role)
        .on_conflict_do_nothing()
    )
    await audit.record(
        db,
        AuditAction.PROJECT_JOIN,
        actor=user.user_id,
        address=address,
        target=audit.project_target(invitation.project_id),
        detail={"invitation_id": str(invitation.invitation_id), "role": invitation.role},
    )
    await db.commit()
    project, member = await membership(db, invitation.project_id, user.user_id)
    return _public(project, member.role, await _member_count(db, project.project_id))
