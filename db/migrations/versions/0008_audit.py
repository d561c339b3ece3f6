"""audit log: the append-only audit_event table, its guard trigger and the one purge path (audit_purge)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

The table refuses UPDATE, DELETE and TRUNCATE in the database itself, whoever asks. The only way a record
goes is `SELECT audit_purge(cutoff)`: a SECURITY DEFINER function (so a deployment may take DELETE away from
the application's role and still purge) that deletes records older than `cutoff`, never younger than one
day. The trigger lets a DELETE through only when the statement runs inside that function (PL/pgSQL's call
stack, `PG_CONTEXT`), not because of a setting any session could change. A role with DDL rights (the
table's owner, a superuser) can still get around it, by disabling the trigger or by defining a look-alike
`audit_purge` on its search path: deliberate DDL that no code path of the platform runs. Separation proper
needs the platform to run as a role that neither owns the table nor creates functions.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _frame_pattern(schema: str) -> str:
    """The trigger's test (a SQL regex literal) for the purge function's frame on the call stack."""
    qualified = "".join("\\" + c if not c.isalnum() and c != "_" else c for c in schema)
    return (
        "'\\nPL/pgSQL function (" + qualified.replace("'", "''") + "\\.)?"
        "audit_purge\\(timestamp with time zone\\) line '"
    )


GUARD = """
CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    stack text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        GET DIAGNOSTICS stack = PG_CONTEXT;
        -- The frame of the purge function in its own schema (named when that is not on the search path;
        -- a look-alike elsewhere, e.g. in pg_temp, which is never searched for functions, always is).
        IF stack ~ {frame} THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'records leave only through the retention purge, SELECT audit_purge(cutoff)';
END $$
"""
TRIGGERS = (
    (
        "CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event"
        " FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()"
    ),
    (
        "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event"
        " FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()"
    ),
)

PURGE = """
CREATE FUNCTION audit_purge(cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp AS $$
DECLARE
    purged bigint;
BEGIN
    IF cutoff IS NULL OR cutoff > now() - interval '1 day' THEN
        RAISE EXCEPTION 'audit_purge keeps at least the last day of records (cutoff %)', cutoff
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM audit_event WHERE at < cutoff;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END $$
"""
REVOKE_PURGE = "REVOKE ALL ON FUNCTION audit_purge(timestamptz) FROM PUBLIC"


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("audit_id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("client_address", sa.String(length=64), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("audit_id"),
    )
    op.create_index("ix_audit_event_at", "audit_event", ["at"], unique=False)
    op.create_index("ix_audit_event_actor", "audit_event", ["actor_id", "audit_id"], unique=False)
    op.create_index("ix_audit_event_action", "audit_event", ["action", "audit_id"], unique=False)
    # One statement per call: asyncpg prepares each one.
    schema = op.get_bind().execute(sa.text("SELECT current_schema()")).scalar_one()
    op.execute(GUARD.format(frame=_frame_pattern(schema)))
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute(PURGE.format(schema=schema))
    op.execute(REVOKE_PURGE)


def downgrade() -> None:
    op.execute("DROP FUNCTION audit_purge(timestamptz)")
    op.drop_table("audit_event")  # drops its triggers
    op.execute("DROP FUNCTION audit_event_append_only()")
