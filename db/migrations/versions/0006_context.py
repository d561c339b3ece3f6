"""context retrieval: identifier lexemes (tsvector + GIN) on context_chunk for the lexical half of hybrid search

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("context_chunk", sa.Column("lexemes", postgresql.TSVECTOR(), nullable=True))
    op.create_index(
        "ix_context_chunk_lexemes", "context_chunk", ["lexemes"], unique=False, postgresql_using="gin"
    )


def downgrade() -> None:
    op.drop_index("ix_context_chunk_lexemes", table_name="context_chunk", postgresql_using="gin")
    op.drop_column("context_chunk", "lexemes")
