"""``citytwin tiles build``: 3D Tiles 1.1 of the twin's buildings under the tiles directory."""

from __future__ import annotations

import typer

from citytwin.cli.context import get_context
from citytwin.cli.output import emit

tiles_app = typer.Typer(help="3D Tiles of the twin's buildings.", no_args_is_help=True)


@tiles_app.command("build")
def build(
    name: str = typer.Option("buildings", "--name", help="tileset name: tiles/NAME/tileset.json"),
    max_per_tile: int = typer.Option(1000, "--max-per-tile", min=10, help="buildings per tile at most"),
    dask: bool = typer.Option(False, "--dask", help="build on the Dask cluster (CITYTWIN_DASK_SCHEDULER or local)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Build glb tiles with per-building metadata (and scenario results) and a tileset.json."""
    from citytwin.tiler.source import build_tiles

    ctx = get_context()
    client = None
    if dask or ctx.settings.dask_scheduler:
        from citytwin.scenarios.cluster import get_client

        client = get_client(ctx.settings.dask_scheduler)
    result = build_tiles(ctx.engine, ctx.settings.tiles_dir, name, client, max_features_per_tile=max_per_tile)
    emit({"name": result.name, "path": str(result.path), "buildings": result.buildings, "tiles": result.tiles,
          "bytes": result.bytes, "seconds": round(result.seconds, 2),
          "buildings_per_second": round(result.buildings_per_second), "skipped": result.skipped,
          "warnings": result.warnings}, as_json=as_json)
