"""``citytwin serve`` and ``citytwin keys``: the API, tiles and web map; API keys."""

from __future__ import annotations

import typer

from citytwin.cli.context import get_context


def serve(
    host: str = typer.Option(None, "--host", help="default 127.0.0.1 (CITYTWIN_API_HOST)"),
    port: int = typer.Option(None, "--port", help="default 8000 (CITYTWIN_API_PORT)"),
    workers: int = typer.Option(1, "--workers", min=1, help="API processes (live feed fans out across them)"),
) -> None:
    """Serve the REST API, the 3D tiles and the web map."""
    import os

    import uvicorn

    ctx = get_context()
    os.environ["CITYTWIN_DATABASE_URL"] = ctx.database_url  # workers use the same database
    ctx.engine  # migrate before the workers start
    host = host or ctx.settings.api_host
    port = port or ctx.settings.api_port
    typer.echo(f"citytwin serving on http://{host}:{port}/")
    uvicorn.run("citytwin.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False, loop="uvloop", http="httptools")


keys_app = typer.Typer(help="API keys with scopes (read, ingest, outages:write, commands, admin).", no_args_is_help=True)


@keys_app.command("create")
def create_key(
    name: str = typer.Option(..., "--name"),
    scopes: list[str] = typer.Option(..., "--scope", help="repeat for several scopes"),
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from citytwin.api.auth import create_key as make

    with get_context().engine.begin() as conn:
        typer.echo(make(conn, name, scopes))
