"""What every command needs: settings, and an engine on the database in use (started on demand)."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine

from citytwin.config import Settings, load_settings


class CliContext:
    """Lazily opens the database: commands that don't touch it never start the cluster."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()

    @cached_property
    def database_url(self) -> str:
        from citytwin.db.engine import resolve_database_url

        return resolve_database_url(self.settings.database_url, self.settings.data_dir)

    @cached_property
    def engine(self) -> Engine:
        from citytwin.db import make_engine, upgrade

        engine = make_engine(self.database_url)
        upgrade(engine)  # the schema is always current for the commands that use it
        return engine


def get_context() -> CliContext:
    return CliContext()
