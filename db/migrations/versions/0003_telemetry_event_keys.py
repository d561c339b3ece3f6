"""telemetry event keys: ground truths carry their feedback event's id so replays add no rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "ground_truth",
        sa.Column("event_id", sa.Uuid(), nullable=False, server_default=sa.text("gen_random_uuid()")),
    )
    op.create_unique_constraint("ground_truth_event_id_key", "ground_truth", ["event_id"])


def downgrade() -> None:
    op.drop_constraint("ground_truth_event_id_key", "ground_truth", type_="unique")
    op.drop_column("ground_truth", "event_id")
