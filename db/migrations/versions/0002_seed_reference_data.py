"""seed reference data: trigger types, plugin versions, languages, default client config

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from db.client_config_seed import DEFAULT_CONFIG_HOCON
from db.seed_data import PLUGIN_VERSIONS, PROGRAMMING_LANGUAGES, TRIGGER_TYPES

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    trigger = sa.table(
        "trigger_type", sa.column("trigger_type_id", sa.Integer), sa.column("trigger_type_name", sa.String)
    )
    version = sa.table(
        "plugin_version",
        sa.column("version_id", sa.Integer),
        sa.column("version_name", sa.String),
        sa.column("ide_type", sa.String),
        sa.column("description", sa.Text),
    )
    language = sa.table(
        "programming_language", sa.column("language_id", sa.Integer), sa.column("language_name", sa.String)
    )
    config = sa.table(
        "config",
        sa.column("config_id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("config_data", sa.Text),
    )
    op.bulk_insert(trigger, [{"trigger_type_id": i, "trigger_type_name": n} for i, n in TRIGGER_TYPES])
    op.bulk_insert(
        version,
        [
            {"version_id": i, "version_name": n, "ide_type": ide, "description": d}
            for i, n, ide, d in PLUGIN_VERSIONS
        ],
    )
    op.bulk_insert(language, [{"language_id": i, "language_name": n} for i, n in PROGRAMMING_LANGUAGES])
    op.bulk_insert(config, [{"config_id": 1, "name": "default", "config_data": DEFAULT_CONFIG_HOCON}])
    # Explicit ids were inserted: move the sequences past them so later inserts do not collide.
    op.execute(
        "SELECT setval(pg_get_serial_sequence('config', 'config_id'), (SELECT max(config_id) FROM config))"
    )


def downgrade() -> None:
    for table in ("config", "programming_language", "plugin_version", "trigger_type"):
        op.execute(f"DELETE FROM {table}")
