"""Plain psycopg connections for the telemetry hot paths (COPY, LISTEN/NOTIFY) from SQLAlchemy URLs."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

TELEMETRY_CHANNEL = "citytwin_telemetry"
OUTBOX_CHANNEL = "citytwin_outbox"


def conninfo(url: str | Engine) -> str:
    """A libpq connection string for a SQLAlchemy URL (``postgresql+psycopg://...``) or an engine."""
    if isinstance(url, Engine):
        parsed = url.url
    else:
        parsed = make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
