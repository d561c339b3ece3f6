"""Async engine and session factory on asyncpg."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def async_url(url: str) -> str:
    """Normalise any PostgreSQL URL to the SQLAlchemy asyncpg dialect."""
    for prefix in (
        "postgresql+asyncpg://",
        "postgresql+psycopg://",
        "postgresql+psycopg2://",
        "postgresql://",
        "postgres://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def plain_url(url: str) -> str:
    """The libpq/asyncpg form of a database URL (no SQLAlchemy dialect suffix)."""
    return "postgresql://" + async_url(url)[len("postgresql+asyncpg://") :]


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> AsyncEngine:
    """An engine with pre-ping so that a restarted PostgreSQL does not break the pool."""
    # hide_parameters: SQL errors and logs must never carry row values (code context, ground truth).
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        hide_parameters=True,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded attributes after commit (responses are shaped after commit)."""
    return async_sessionmaker(engine, expire_on_commit=False)
