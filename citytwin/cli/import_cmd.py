"""``citytwin import buildings|grid|dem|sensors PATH``."""

from __future__ import annotations

from pathlib import Path

import typer

from citytwin.cli.context import get_context
from citytwin.cli.output import emit
from citytwin.errors import InputError

import_app = typer.Typer(help="Load city data into the twin (one transaction per import).", no_args_is_help=True)

CrsOption = typer.Option(None, "--crs", help="CRS of the input when the file declares none, e.g. EPSG:28992")
JsonOption = typer.Option(False, "--json", help="print a JSON summary")
SourceOption = typer.Option(None, "--source", help="dataset name (default: the file name); re-importing it updates")


def _existing(path: Path) -> Path:
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    return path


def _report(summary, as_json: bool) -> None:
    data = summary.as_dict()
    text = (f"{summary.kind} from {summary.path}: {summary.imported} imported, {summary.updated} updated, "
            f"{summary.rejected} rejected (twin CRS {summary.crs or 'n/a'})")
    for warning in summary.warnings[:10]:
        text += f"\n  warning: {warning}"
    for rejection in summary.rejections[:10]:
        text += f"\n  rejected: {rejection}"
    emit(data, as_json=as_json, text=text)


@import_app.command("buildings")
def import_buildings(
    path: Path,
    crs: str = CrsOption,
    height_attr: str = typer.Option(None, "--height-attr", help="attribute holding the height in metres"),
    layer: str = typer.Option(None, "--layer", help="layer to read from a multi-layer file"),
    source: str = SourceOption,
    as_json: bool = JsonOption,
) -> None:
    """Buildings from CityJSON, GeoPackage, GeoJSON, Shapefile, FlatGeobuf, OSM PBF or GeoParquet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from citytwin.db.buildings import load_buildings
    from citytwin.io.buildings import iter_building_chunks

    path = _existing(path)
    ctx = get_context()
    engine = ctx.engine
    chunks = iter_building_chunks(path, crs=crs, height_attr=height_attr, layer=layer)
    with Progress(TextColumn("[bold]importing buildings"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), disable=as_json, transient=True) as progress:
        task = progress.add_task("import", total=None)
        summary = load_buildings(engine, chunks, source=source or path.stem, path=str(path),
                                 on_progress=lambda n: progress.advance(task, n))
    _report(summary, as_json)


@import_app.command("grid")
def import_grid(path: Path, crs: str = CrsOption, source: str = SourceOption, as_json: bool = JsonOption) -> None:
    """An electric grid: RBTS-style CSV folder, pandapower JSON, or a citytwin grid GeoPackage."""
    from citytwin.db.grid import load_grid
    from citytwin.io.grids import read_grid

    path = _existing(path)
    grid = read_grid(path)
    if crs:
        grid.crs = crs
    summary = load_grid(get_context().engine, grid, source=source or path.stem, path=str(path))
    _report(summary, as_json)


@import_app.command("dem")
def import_dem(path: Path, crs: str = CrsOption, name: str = typer.Option(None, "--name"),
               as_json: bool = JsonOption) -> None:
    """A DEM GeoTIFF into the terrain store; fills ground elevation of buildings that lack it."""
    from citytwin.db.terrain import register_dem

    summary = register_dem(get_context().engine, _existing(path), name=name, crs=crs)
    _report(summary, as_json)


@import_app.command("sensors")
def import_sensors(path: Path, crs: str = CrsOption, source: str = SourceOption, as_json: bool = JsonOption) -> None:
    """Sensors (one row per datastream, point geometry) into the SensorThings tables."""
    from citytwin.db.sensors import load_sensors
    from citytwin.io.sensors import read_sensors

    path = _existing(path)
    sensors = read_sensors(path, crs=crs)
    summary = load_sensors(get_context().engine, sensors, source=source or path.stem, path=str(path))
    _report(summary, as_json)
