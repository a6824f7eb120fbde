"""Shared FastAPI dependencies: the app's engine and settings (HTTP requests and WebSockets alike)."""

from __future__ import annotations

from sqlalchemy import Engine
from starlette.requests import HTTPConnection

from citytwin.errors import ConfigurationError


def get_engine(connection: HTTPConnection) -> Engine:
    """The database engine the app was created with."""
    engine = getattr(connection.app.state, "engine", None)
    if engine is None:
        raise ConfigurationError("this API process has no database configured")
    return engine


def get_settings(connection: HTTPConnection):
    """The app's settings (``citytwin.config.Settings`` in production)."""
    return connection.app.state.settings
