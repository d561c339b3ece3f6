"""pinned model ids: models without a pinned id are numbered from 1000 up, so pins (1-999) never collide

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

The Code4me plugin sends fixed model ids from its bundled plugin.conf (1 deepseek-coder-1.3b, 2 starcoder2-3b,
3 Ministral-8B-Instruct). A registry entry can pin its id (`id:` in the Serve config, deployments/registry.py); an
entry without one gets the next value of the serial sequence, which this moves past the pinned range. Rows
registered before keep their ids.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "SELECT setval(pg_get_serial_sequence('model_name', 'model_id'),"
        " GREATEST((SELECT coalesce(max(model_id), 0) FROM model_name), 999))"
    )


def downgrade() -> None:
    op.execute(
        "SELECT setval(pg_get_serial_sequence('model_name', 'model_id'),"
        " GREATEST((SELECT coalesce(max(model_id), 0) FROM model_name), 1), (SELECT count(*) > 0 FROM model_name))"
    )
