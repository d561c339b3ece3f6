"""accounts: a deleted account's research rows outlive it, anonymised (meta_query.user_id nullable, SET NULL)

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# PostgreSQL's default name for the foreign key created by 0001.
FK_NAME = "meta_query_user_id_fkey"


def upgrade() -> None:
    op.alter_column("meta_query", "user_id", existing_type=sa.Uuid(), nullable=True)
    op.drop_constraint(FK_NAME, "meta_query", type_="foreignkey")
    op.create_foreign_key(FK_NAME, "meta_query", "user", ["user_id"], ["user_id"], ondelete="SET NULL")


def downgrade() -> None:
    # Anonymised rows have no owner and cannot satisfy NOT NULL again.
    op.execute("DELETE FROM meta_query WHERE user_id IS NULL")
    op.drop_constraint(FK_NAME, "meta_query", type_="foreignkey")
    op.create_foreign_key(FK_NAME, "meta_query", "user", ["user_id"], ["user_id"], ondelete="CASCADE")
    op.alter_column("meta_query", "user_id", existing_type=sa.Uuid(), nullable=False)
