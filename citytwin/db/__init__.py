"""Database layer: engines, the embedded cluster, migrations, twin metadata and bulk loaders."""

from citytwin.db.engine import make_engine, resolve_database_url
from citytwin.db.migrate import upgrade

__all__ = ["make_engine", "resolve_database_url", "upgrade"]
