"""api tokens: per-user tokens for the /v1 routes (Tabby's HTTP API), stored as SHA-256 hashes

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

Also: plugin_version rows for Tabby clients are added at run time (their version comes from the client), so
(version_name, ide_type) becomes unique and the serial sequence moves past the seeded ids.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_token",
        sa.Column("token_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["user.user_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index(op.f("ix_api_token_user_id"), "api_token", ["user_id"], unique=False)
    op.create_index("ux_plugin_version_name_ide", "plugin_version", ["version_name", "ide_type"], unique=True)
    op.execute(
        "SELECT setval(pg_get_serial_sequence('plugin_version', 'version_id'),"
        " GREATEST((SELECT coalesce(max(version_id), 0) FROM plugin_version), 99))"
    )


def downgrade() -> None:
    op.drop_index("ux_plugin_version_name_ide", table_name="plugin_version")
    op.drop_index(op.f("ix_api_token_user_id"), table_name="api_token")
    op.drop_table("api_token")
