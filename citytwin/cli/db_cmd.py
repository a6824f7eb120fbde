"""``citytwin db start|stop|status|url|upgrade``."""

from __future__ import annotations

import typer

from citytwin.cli.context import get_context
from citytwin.cli.output import emit

db_app = typer.Typer(help="The twin's database: the embedded cluster or CITYTWIN_DATABASE_URL.", no_args_is_help=True)


def _cluster():
    from citytwin.db.embedded import EmbeddedCluster

    return EmbeddedCluster.for_data_dir(get_context().settings.data_dir)


@db_app.command()
def start() -> None:
    """Initialise (first time) and start the embedded PostgreSQL + PostGIS cluster."""
    ctx = get_context()
    if ctx.settings.database_url:
        typer.echo("CITYTWIN_DATABASE_URL is set; nothing to start (using that server)")
        return
    url = _cluster().ensure_running()
    typer.echo(f"embedded database running: {url}")


@db_app.command()
def stop() -> None:
    """Stop the embedded cluster."""
    was_running = _cluster().stop()
    typer.echo("embedded database stopped" if was_running else "embedded database was not running")


@db_app.command()
def status(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Where the database is and whether it is up."""
    ctx = get_context()
    if ctx.settings.database_url:
        from citytwin.db import make_engine
        from citytwin.db.engine import normalise_url
        from citytwin.db.migrate import current_revision

        url = normalise_url(ctx.settings.database_url)
        info = {"mode": "external", "url": url, "revision": current_revision(make_engine(url))}
    else:
        info = {"mode": "embedded", **_cluster().status()}
    emit(info, as_json=as_json)


@db_app.command()
def url() -> None:
    """Print the connection URL in use (starting the embedded cluster if needed)."""
    typer.echo(get_context().database_url)


@db_app.command()
def upgrade() -> None:
    """Apply Alembic migrations up to the newest schema."""
    from citytwin.db import make_engine
    from citytwin.db import upgrade as run_upgrade

    revision = run_upgrade(make_engine(get_context().database_url))
    typer.echo(f"schema at revision {revision}")
