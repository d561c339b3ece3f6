"""projects: invitations by email with single-use, expiring tokens

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "project_invitation",
        sa.Column("invitation_id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=20), server_default="member", nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("accepted_by", sa.Uuid(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["project.project_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["invited_by"], ["user.user_id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["accepted_by"], ["user.user_id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("invitation_id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(
        op.f("ix_project_invitation_project_id"), "project_invitation", ["project_id"], unique=False
    )
    op.create_index(
        "ix_project_invitation_project_email",
        "project_invitation",
        ["project_id", sa.literal_column("lower(email)")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_project_invitation_project_email", table_name="project_invitation")
    op.drop_index(op.f("ix_project_invitation_project_id"), table_name="project_invitation")
    op.drop_table("project_invitation")
