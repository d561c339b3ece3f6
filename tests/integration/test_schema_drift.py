"""The migrations build exactly the schema the SQLModel tables declare (no drift between the two)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import db.tables  # noqa: F401  (registers every table on SQLModel.metadata)
from db.engine import make_engine
from serve.embedded import ServiceUrls


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": False}
    )
    return list(compare_metadata(context, SQLModel.metadata))


async def test_migrated_database_matches_the_table_models(services: ServiceUrls) -> None:
    engine = make_engine(services.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == [], "migrations and db/tables.py disagree:\n" + "\n".join(map(repr, diff))
