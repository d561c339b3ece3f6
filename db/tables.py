"""SQLModel tables: the system of record for users, sessions, queries, generations and studies."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlmodel import Field, SQLModel

EMBEDDING_DIM = 384  # all-MiniLM-L6-v2


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the tables use."""
    return datetime.now(UTC)


def _ts(nullable: bool = False, index: bool = False) -> Any:
    """A timestamptz column; non-null ones default to now() in Python and in the database (bulk inserts)."""
    if nullable:
        return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True, index=index))
    return Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=index, server_default=text("now()")),
    )


def _fk(
    target: str,
    *,
    int_key: bool = False,
    nullable: bool = False,
    ondelete: str = "CASCADE",
    index: bool = True,
) -> Any:
    """A foreign-key column; UUID unless the target is an integer key."""
    return Field(
        default=None,
        sa_column=Column(
            Integer if int_key else Uuid,
            ForeignKey(target, ondelete=ondelete),
            nullable=nullable,
            index=index,
        ),
    )


# ---------------------------------------------------------------- reference data


class Config(SQLModel, table=True):
    """A client configuration (HOCON text) handed to the plugin at authentication."""

    __tablename__ = "config"
    config_id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_column=Column(String(100), unique=True, nullable=False))
    config_data: str = Field(sa_column=Column(Text, nullable=False))


class ProgrammingLanguage(SQLModel, table=True):
    """JetBrains language names with the fixed ids the plugin relies on."""

    __tablename__ = "programming_language"
    language_id: int = Field(primary_key=True)
    language_name: str = Field(sa_column=Column(String(100), unique=True, nullable=False))


class TriggerType(SQLModel, table=True):
    """How a completion was triggered: manual=1, auto=2, idle=3."""

    __tablename__ = "trigger_type"
    trigger_type_id: int = Field(primary_key=True)
    trigger_type_name: str = Field(sa_column=Column(String(50), unique=True, nullable=False))


class PluginVersion(SQLModel, table=True):
    """Known plugin versions (ids 1-4 seeded; Tabby clients' versions from 100 up, added as they appear)."""

    __tablename__ = "plugin_version"
    version_id: int = Field(primary_key=True)
    version_name: str = Field(sa_column=Column(String(100), nullable=False))
    ide_type: str = Field(sa_column=Column(String(100), nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text))

    # Tabby clients' versions are added at run time (app/services/client_versions.py), one row per version.
    __table_args__ = (Index("ux_plugin_version_name_ide", "version_name", "ide_type", unique=True),)


class ModelName(SQLModel, table=True):
    """A model known to the platform; rows are upserted from the Serve config's model registry."""

    __tablename__ = "model_name"
    model_id: int | None = Field(default=None, primary_key=True)
    model_name: str = Field(sa_column=Column(String(200), unique=True, nullable=False))
    model_source: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    family: str = Field(default="", sa_column=Column(String(50), nullable=False, server_default=""))
    is_instruction_tuned: bool = False
    is_default: bool = False
    is_active: bool = True
    registry_entry: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )
    created_at: datetime = _ts()


# ---------------------------------------------------------------- users, projects, sessions


class User(SQLModel, table=True):
    """An account; password_hash is argon2 (None for Google-only accounts)."""

    __tablename__ = "user"
    user_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    email: str = Field(sa_column=Column(String(320), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    password_hash: str | None = Field(default=None, sa_column=Column(Text))
    is_oauth_signup: bool = False
    verified: bool = False
    is_admin: bool = False
    joined_at: datetime = _ts()
    config_id: int = Field(sa_column=Column(Integer, ForeignKey("config.config_id"), nullable=False))
    preference: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )

    __table_args__ = (Index("ux_user_email_lower", text("lower(email)"), unique=True),)


class Project(SQLModel, table=True):
    """A code project shared by its members; context and telemetry hang off it."""

    __tablename__ = "project"
    project_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    project_name: str = Field(sa_column=Column(String(200), nullable=False))
    created_by: uuid.UUID | None = _fk("user.user_id", nullable=True, ondelete="SET NULL")
    created_at: datetime = _ts()
    multi_file_contexts: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )


class ProjectMember(SQLModel, table=True):
    """Membership of a user in a project (role owner, admin or member); only members may activate or read it."""

    __tablename__ = "project_member"
    project_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("project.project_id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("user.user_id", ondelete="CASCADE"), primary_key=True, index=True)
    )
    role: str = Field(default="member", sa_column=Column(String(20), nullable=False, server_default="member"))
    joined_at: datetime = _ts()


class ProjectInvitation(SQLModel, table=True):
    """An owner's invitation of an email address to a project, accepted once with its token before it expires."""

    __tablename__ = "project_invitation"
    invitation_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    project_id: uuid.UUID = _fk("project.project_id")
    email: str = Field(sa_column=Column(String(320), nullable=False))
    role: str = Field(default="member", sa_column=Column(String(20), nullable=False, server_default="member"))
    # SHA-256 of the token: a leaked table does not let anyone accept.
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    invited_by: uuid.UUID | None = _fk("user.user_id", nullable=True, ondelete="SET NULL", index=False)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    accepted_at: datetime | None = _ts(nullable=True)
    accepted_by: uuid.UUID | None = _fk("user.user_id", nullable=True, ondelete="SET NULL", index=False)
    revoked_at: datetime | None = _ts(nullable=True)

    __table_args__ = (Index("ix_project_invitation_project_email", "project_id", text("lower(email)")),)


class Session(SQLModel, table=True):
    """An IDE session (from acquire to deactivation or expiry)."""

    __tablename__ = "session"
    session_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = _fk("user.user_id")
    start_time: datetime = _ts(index=True)
    end_time: datetime | None = _ts(nullable=True)


class SessionProject(SQLModel, table=True):
    """Projects activated during a session."""

    __tablename__ = "session_project"
    session_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("session.session_id", ondelete="CASCADE"), primary_key=True)
    )
    project_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("project.project_id", ondelete="CASCADE"), primary_key=True, index=True)
    )


class ApiToken(SQLModel, table=True):
    """A user's API token for the /v1 routes (Tabby's clients): only its SHA-256 is kept, the value is shown once."""

    __tablename__ = "api_token"
    token_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = _fk("user.user_id")
    name: str = Field(sa_column=Column(String(100), nullable=False))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    created_at: datetime = _ts()
    # Touched when a replica looks the token up in PostgreSQL (at most once per API_TOKEN_CACHE_S per replica).
    last_used_at: datetime | None = _ts(nullable=True)
    expires_at: datetime | None = _ts(nullable=True)


# ---------------------------------------------------------------- queries and telemetry


def _sealed(nullable: bool = True) -> Any:
    """A column of encrypted text (app/infra/envelope.py): bytea, opened by the reader with the keyring."""
    if nullable:
        return Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    return Field(sa_column=Column(LargeBinary, nullable=False))


class Context(SQLModel, table=True):
    """The code around the cursor at query time (already redacted, then sealed: app/infra/encryption.py)."""

    __tablename__ = "context"
    context_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    prefix: bytes | None = _sealed()
    suffix: bytes | None = _sealed()
    file_name: str | None = Field(default=None, sa_column=Column(Text))
    selected_text: bytes | None = _sealed()
    context_files: list[str] | None = Field(default=None, sa_column=Column(JSONB))


class ContextualTelemetry(SQLModel, table=True):
    """Where and how the query was made (language, trigger, plugin version, caret)."""

    __tablename__ = "contextual_telemetry"
    contextual_telemetry_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    version_id: int = Field(
        sa_column=Column(Integer, ForeignKey("plugin_version.version_id"), nullable=False)
    )
    trigger_type_id: int = Field(
        sa_column=Column(Integer, ForeignKey("trigger_type.trigger_type_id"), nullable=False)
    )
    language_id: int = Field(
        sa_column=Column(Integer, ForeignKey("programming_language.language_id"), nullable=False, index=True)
    )
    file_path: str | None = Field(default=None, sa_column=Column(Text))
    caret_line: int | None = None
    document_char_length: int | None = None
    relative_document_position: float | None = None


class BehavioralTelemetry(SQLModel, table=True):
    """The user's typing behaviour around the query."""

    __tablename__ = "behavioral_telemetry"
    behavioral_telemetry_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    time_since_last_shown: int | None = Field(default=None, sa_column=Column(BigInteger))
    time_since_last_accepted: int | None = Field(default=None, sa_column=Column(BigInteger))
    typing_speed: float | None = None


class MetaQuery(SQLModel, table=True):
    """The parent row of every completion or chat query."""

    __tablename__ = "meta_query"
    meta_query_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # NULL once the account is deleted without its data: the row stays as anonymised research data.
    user_id: uuid.UUID | None = _fk("user.user_id", nullable=True, ondelete="SET NULL")
    session_id: uuid.UUID | None = _fk("session.session_id", nullable=True, ondelete="SET NULL")
    project_id: uuid.UUID | None = _fk("project.project_id", nullable=True, ondelete="SET NULL")
    context_id: uuid.UUID | None = _fk("context.context_id", nullable=True, ondelete="SET NULL", index=False)
    contextual_telemetry_id: uuid.UUID | None = _fk(
        "contextual_telemetry.contextual_telemetry_id", nullable=True, ondelete="SET NULL", index=False
    )
    behavioral_telemetry_id: uuid.UUID | None = _fk(
        "behavioral_telemetry.behavioral_telemetry_id", nullable=True, ondelete="SET NULL", index=False
    )
    query_type: str = Field(sa_column=Column(String(20), nullable=False))
    timestamp: datetime = _ts(index=True)
    total_serving_time_ms: int | None = None
    study_id: uuid.UUID | None = _fk("study.study_id", nullable=True, ondelete="SET NULL")
    arm_id: int | None = _fk("study_arm.arm_id", int_key=True, nullable=True, ondelete="SET NULL")

    __table_args__ = (Index("ix_meta_query_user_time", "user_id", "timestamp"),)


class CompletionQuery(SQLModel, table=True):
    """A completion child of a meta query."""

    __tablename__ = "completion_query"
    meta_query_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("meta_query.meta_query_id", ondelete="CASCADE"), primary_key=True)
    )
    stop_sequences: list[str] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False, server_default="[]")
    )


class Chat(SQLModel, table=True):
    """A chat conversation of a user in a project."""

    __tablename__ = "chat"
    chat_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = _fk("user.user_id")
    project_id: uuid.UUID | None = _fk("project.project_id", nullable=True)
    # The first line of the first message (at most 200 characters): the user's words, so sealed too.
    title: bytes = _sealed(nullable=False)
    created_at: datetime = _ts(index=True)


class ChatQuery(SQLModel, table=True):
    """A chat child of a meta query: one user turn."""

    __tablename__ = "chat_query"
    meta_query_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("meta_query.meta_query_id", ondelete="CASCADE"), primary_key=True)
    )
    chat_id: uuid.UUID = _fk("chat.chat_id")
    web_enabled: bool = False


class ChatMessage(SQLModel, table=True):
    """A message of a chat: the user's turn or one model's answer."""

    __tablename__ = "chat_message"
    message_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    chat_id: uuid.UUID = _fk("chat.chat_id")
    meta_query_id: uuid.UUID | None = _fk("meta_query.meta_query_id", nullable=True)
    role: str = Field(sa_column=Column(String(20), nullable=False))
    content: bytes = _sealed(nullable=False)
    model_id: int | None = _fk(
        "model_name.model_id", int_key=True, nullable=True, ondelete="SET NULL", index=False
    )
    created_at: datetime = _ts()

    __table_args__ = (Index("ix_chat_message_chat_time", "chat_id", "created_at"),)


class Generation(SQLModel, table=True):
    """One model's answer to one query, with latency, confidence and what the user did with it."""

    __tablename__ = "had_generation"
    meta_query_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("meta_query.meta_query_id", ondelete="CASCADE"), primary_key=True)
    )
    model_id: int = Field(sa_column=Column(ForeignKey("model_name.model_id"), primary_key=True, index=True))
    completion: bytes = _sealed(nullable=False)  # model output is code too (a chat answer quotes the user's)
    generation_time_ms: int = Field(sa_column=Column(Integer, nullable=False))
    confidence: float | None = Field(default=None, sa_column=Column(Float))
    token_logprobs: list[float] | None = Field(default=None, sa_column=Column(ARRAY(Float)))
    shown_at: list[datetime] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(DateTime(timezone=True)), nullable=False, server_default="{}"),
    )
    was_accepted: bool = False
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = _ts()

    __table_args__ = (Index("ix_had_generation_model_time", "model_id", "created_at"),)


class GroundTruth(SQLModel, table=True):
    """What the user actually had in the file after a completion (several per query)."""

    __tablename__ = "ground_truth"
    ground_truth_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True)
    )
    meta_query_id: uuid.UUID = _fk("meta_query.meta_query_id")
    model_id: int | None = _fk(
        "model_name.model_id", int_key=True, nullable=True, ondelete="SET NULL", index=False
    )
    truth_timestamp: datetime = _ts()
    ground_truth: bytes = _sealed(nullable=False)
    # The feedback event's id: a replayed telemetry event never adds a second row.
    event_id: uuid.UUID = Field(
        default_factory=uuid.uuid4,
        sa_column=Column(Uuid, nullable=False, unique=True, server_default=text("gen_random_uuid()")),
    )


# ---------------------------------------------------------------- studies


class Study(SQLModel, table=True):
    """An A/B study: users are assigned to arms that fix which models they get."""

    __tablename__ = "study"
    study_id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(sa_column=Column(String(200), unique=True, nullable=False))
    description: str | None = Field(default=None, sa_column=Column(Text))
    created_by: uuid.UUID | None = _fk("user.user_id", nullable=True, ondelete="SET NULL")
    starts_at: datetime = _ts()
    ends_at: datetime | None = _ts(nullable=True)
    is_active: bool = True


class StudyArm(SQLModel, table=True):
    """One arm of a study: a named model set with an assignment weight."""

    __tablename__ = "study_arm"
    arm_id: int | None = Field(default=None, primary_key=True)
    study_id: uuid.UUID = _fk("study.study_id")
    name: str = Field(sa_column=Column(String(100), nullable=False))
    model_ids: list[int] = Field(default_factory=list, sa_column=Column(ARRAY(Integer), nullable=False))
    weight: float = 1.0
    settings: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )

    __table_args__ = (UniqueConstraint("study_id", "name"),)


class StudyAssignment(SQLModel, table=True):
    """The arm a user is in for a study (one per user and study)."""

    __tablename__ = "study_assignment"
    study_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("study.study_id", ondelete="CASCADE"), primary_key=True)
    )
    user_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("user.user_id", ondelete="CASCADE"), primary_key=True, index=True)
    )
    arm_id: int = _fk("study_arm.arm_id", int_key=True)
    assigned_at: datetime = _ts()


# ---------------------------------------------------------------- retrieval


class ContextChunk(SQLModel, table=True):
    """An embedded chunk of a project file for multi-file context retrieval."""

    __tablename__ = "context_chunk"
    chunk_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True)
    )
    project_id: uuid.UUID = _fk("project.project_id", index=False)
    file_path: str = Field(sa_column=Column(Text, nullable=False))
    chunk_index: int
    start_line: int
    end_line: int
    content: bytes = _sealed(nullable=False)
    content_hash: str = Field(sa_column=Column(String(64), nullable=False))
    embedding: list[float] | None = Field(default=None, sa_column=Column(Vector(EMBEDDING_DIM)))
    # Identifier tokens of the content (app.context.lexical) for the lexical half of hybrid retrieval, as keyed
    # hashes (Keyring.lexeme): the index matches tokens without holding them.
    lexemes: str | None = Field(default=None, sa_column=Column(TSVECTOR))
    updated_at: datetime = _ts()

    __table_args__ = (
        UniqueConstraint("project_id", "file_path", "chunk_index", name="uq_context_chunk_position"),
        Index("ix_context_chunk_project_file", "project_id", "file_path"),
        Index("ix_context_chunk_lexemes", "lexemes", postgresql_using="gin"),
        Index(
            "ix_context_chunk_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


# ---------------------------------------------------------------- audit


class AuditEvent(SQLModel, table=True):
    """One audited action: who (actor), what (action), on what (target), when, from where, and a small detail.

    Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE; only the retention purge, the SECURITY DEFINER
    function `audit_purge`, deletes old records (migration 0008). Written by app/services/audit.py only.
    """

    __tablename__ = "audit_event"
    audit_id: int | None = Field(
        default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True)
    )
    at: datetime = _ts(index=True)
    # No foreign keys: a deleted account or project leaves its records as they were (ON DELETE SET NULL
    # would be an UPDATE, which the table refuses). A deleted account's id points at nothing any more.
    actor_id: uuid.UUID | None = Field(default=None, sa_column=Column(Uuid, nullable=True))
    action: str = Field(sa_column=Column(String(64), nullable=False))
    target_type: str | None = Field(default=None, sa_column=Column(String(32)))
    target_id: str | None = Field(default=None, sa_column=Column(String(64)))
    client_address: str | None = Field(default=None, sa_column=Column(String(64)))
    detail: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSONB, nullable=False, server_default="{}")
    )

    __table_args__ = (
        Index("ix_audit_event_actor", "actor_id", "audit_id"),
        Index("ix_audit_event_action", "action", "audit_id"),
    )
