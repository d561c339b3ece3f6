"""encryption at rest: stored code columns become bytea in the envelope format of app/infra/envelope.py

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

bytea, not text with a prefix: a sealed value is binary (version, key id, wrapped key, nonce, ciphertext),
base64 would make every value a third larger, and a text column would still accept plaintext from a
forgotten writer. Rows already stored become version-0 values (a zero byte, then the UTF-8 text): this
migration needs no key and is one table rewrite, and `code4me rekey` encrypts them afterwards while the
platform runs. The chunks' lexemes held identifier tokens in clear: they are dropped here and rebuilt as
keyed hashes by `code4me rekey` (until then those chunks are found by their embeddings only).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEALED = {
    "context": ("prefix", "suffix", "selected_text"),
    "chat_message": ("content",),
    "ground_truth": ("ground_truth",),
    "context_chunk": ("content",),
    "had_generation": ("completion",),
    "chat": ("title",),
}


def upgrade() -> None:
    for table, columns in SEALED.items():
        changes = ", ".join(
            f"ALTER COLUMN {c} TYPE bytea USING ('\\x00'::bytea || convert_to({c}, 'UTF8'))" for c in columns
        )
        op.execute(f"ALTER TABLE {table} {changes}")
    op.execute("UPDATE context_chunk SET lexemes = NULL WHERE lexemes IS NOT NULL")


def downgrade() -> None:
    # Only plaintext (version-0) values can go back to text without the keys: refuse while any is sealed.
    for table, columns in SEALED.items():
        for c in columns:
            op.execute(
                f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM {table} WHERE get_byte({c}, 0) <> 0) THEN"
                f" RAISE EXCEPTION '{table}.{c} holds encrypted values: downgrading would lose them'; END IF; END $$"
            )
        changes = ", ".join(
            f"ALTER COLUMN {c} TYPE text USING convert_from(substring({c} FROM 2), 'UTF8')" for c in columns
        )
        op.execute(f"ALTER TABLE {table} {changes}")
