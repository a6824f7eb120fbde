"""Engines: the configured server, or the embedded cluster when no URL is set."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from citytwin.db.embedded import EmbeddedCluster
from citytwin.errors import ConfigurationError, ExternalServiceError


def normalise_url(url: str) -> str:
    """Accept ``postgres://`` / ``postgresql://`` URLs and use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith("postgresql+psycopg://"):
        return url
    raise ConfigurationError(f"unsupported database URL {url.split('@')[-1]!r}: citytwin needs PostgreSQL + PostGIS")


def resolve_database_url(database_url: str, data_dir: Path, *, start: bool = True) -> str:
    """The URL in use: ``database_url`` if set, else the embedded cluster (started if asked)."""
    if database_url:
        return normalise_url(database_url)
    cluster = EmbeddedCluster.for_data_dir(data_dir)
    return cluster.ensure_running() if start else cluster.url


def make_engine(url: str, **kwargs: object) -> Engine:
    """A SQLAlchemy engine for ``url`` that fails with a clear message when the server is down."""
    engine = create_engine(normalise_url(url), pool_pre_ping=True, future=True, **kwargs)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        where = url.split("@")[-1]
        raise ExternalServiceError(f"cannot connect to the database at {where}: {exc.orig}") from exc
    return engine
