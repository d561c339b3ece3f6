"""What is encrypted at rest, bound to which row, and the keyring a process uses (app/infra/envelope.py).

Sealed columns (bytea, app/infra/envelope.py's format) and the row id their AAD binds them to:

| table | columns | row id |
|---|---|---|
| context | prefix, suffix, selected_text | context_id |
| chat_message | content | message_id |
| ground_truth | ground_truth | event_id (the key known before the row is written) |
| context_chunk | content | project_id/chunk_index/file_path (its position, the upsert key) |
| had_generation | completion | meta_query_id/model_id (model output: code, or a chat answer quoting it) |
| chat | title | chat_id (the first line of the first message) |

The keyring comes from `ENCRYPTION_KEYS`; without it (development and tests only: production refuses to
start) a key is generated once and kept in `$CODE4ME_DATA_DIR/encryption.keys` (mode 0600), as the embedded
PostgreSQL and Redis keep their data there.
"""

from __future__ import annotations

import os
import secrets
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlmodel import SQLModel

from app.infra.envelope import Keyring, KeyringError, new_key_spec
from app.infra.settings import Settings

KEY_FILE = "encryption.keys"


@dataclass(frozen=True)
class SealedColumns:
    """A table's sealed columns, how its row id (bound into each value's AAD) is read from a row, and the
    key a re-encryption pass walks it by (`code4me rekey`)."""

    table: str
    columns: tuple[str, ...]
    row_id: tuple[str, ...]  # the columns whose values, joined by '/', are the row id
    cursor: tuple[tuple[str, str], ...]  # the primary key's (column, PostgreSQL type): the rekey's order


CONTEXT = SealedColumns(
    "context", ("prefix", "suffix", "selected_text"), ("context_id",), (("context_id", "uuid"),)
)
CHAT_MESSAGE = SealedColumns("chat_message", ("content",), ("message_id",), (("message_id", "uuid"),))
GROUND_TRUTH = SealedColumns("ground_truth", ("ground_truth",), ("event_id",), (("ground_truth_id", "int8"),))
CONTEXT_CHUNK = SealedColumns(
    "context_chunk", ("content",), ("project_id", "chunk_index", "file_path"), (("chunk_id", "int8"),)
)
GENERATION = SealedColumns(
    "had_generation",
    ("completion",),
    ("meta_query_id", "model_id"),
    (("meta_query_id", "uuid"), ("model_id", "int4")),
)
CHAT = SealedColumns("chat", ("title",), ("chat_id",), (("chat_id", "uuid"),))
SEALED = (CONTEXT, CHAT_MESSAGE, GROUND_TRUTH, CONTEXT_CHUNK, GENERATION, CHAT)
_BY_TABLE = {s.table: s for s in SEALED}


def aad(table: str, column: str, *row_id: object) -> bytes:
    """The associated data of one stored value: a ciphertext opens only in its own table, column and row."""
    rid = "/".join(str(part) for part in row_id)
    return b"code4me\x00" + table.encode() + b"\x00" + column.encode() + b"\x00" + rid.encode()


def context_aad(column: str, context_id: uuid.UUID) -> bytes:
    """AAD of a context row's prefix, suffix or selected_text."""
    return aad(CONTEXT.table, column, context_id)


def message_aad(message_id: uuid.UUID) -> bytes:
    """AAD of a chat message's content."""
    return aad(CHAT_MESSAGE.table, "content", message_id)


def ground_truth_aad(event_id: uuid.UUID) -> bytes:
    """AAD of a ground truth (keyed by its feedback event's id)."""
    return aad(GROUND_TRUTH.table, "ground_truth", event_id)


def title_aad(chat_id: uuid.UUID) -> bytes:
    """AAD of a chat's title."""
    return aad(CHAT.table, "title", chat_id)


def generation_aad(meta_query_id: uuid.UUID, model_id: int) -> bytes:
    """AAD of one model's answer to one query."""
    return aad(GENERATION.table, "completion", meta_query_id, model_id)


def chunk_aad(project_id: uuid.UUID, chunk_index: int, file_path: str) -> bytes:
    """AAD of a context chunk's content (its position: a chunk moved to another file or index fails)."""
    return aad(CONTEXT_CHUNK.table, "content", project_id, chunk_index, file_path)


def opened(row: SQLModel, keyring: Keyring) -> dict[str, str | None]:
    """The texts of a row's sealed columns (none for a table without them), by column name."""
    sealed = _BY_TABLE.get(str(row.__tablename__))
    if sealed is None:
        return {}
    rid = [getattr(row, c) for c in sealed.row_id]
    return {c: keyring.open_optional(getattr(row, c), aad(sealed.table, c, *rid)) for c in sealed.columns}


def keyring_for(settings: Settings) -> Keyring:
    """The keyring of these settings: ENCRYPTION_KEYS, else the local development key under data_dir."""
    spec = settings.encryption_keys.get_secret_value() if settings.encryption_keys is not None else None
    return _keyring(spec, settings.environment, str(settings.data_dir.resolve()))


@lru_cache(maxsize=16)
def _keyring(spec: str | None, environment: str, data_dir: str) -> Keyring:
    if spec is not None:
        return Keyring.parse(spec)
    if environment == "production":  # Settings refuses this already; never fall back here either
        raise KeyringError("ENCRYPTION_KEYS must be set when ENVIRONMENT=production")
    return Keyring.parse(local_key_spec(Path(data_dir)))


def local_key_spec(data_dir: Path) -> str:
    """The development keyring kept under data_dir, created on first use (atomically: the processes of one
    machine agree on it)."""
    path = data_dir / KEY_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = data_dir / f".{KEY_FILE}.{secrets.token_hex(8)}"
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(new_key_spec(f"local-{secrets.token_hex(4)}") + "\n")
    try:
        os.link(staging, path)  # fails if another process created it first: then its key is the key
    except FileExistsError:
        pass
    finally:
        staging.unlink()
    return path.read_text().strip()
