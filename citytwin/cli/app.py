"""The root ``citytwin`` command and its groups."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from citytwin.cli.context import get_context
from citytwin.cli.db_cmd import db_app
from citytwin.cli.import_cmd import import_app
from citytwin.cli.output import emit
from citytwin.cli.grid_cmd import graph_app, grid_app
from citytwin.cli.serve_cmd import keys_app, serve
from citytwin.cli.simulate_cmd import simulate_app
from citytwin.cli.tiles_cmd import tiles_app
from citytwin.cli.telemetry_cmd import telemetry_app

app = typer.Typer(help="citytwin: a city-scale geospatial digital twin.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")
app.add_typer(keys_app, name="keys")
app.add_typer(simulate_app, name="simulate")
app.add_typer(grid_app, name="grid")
app.add_typer(graph_app, name="graph")
app.add_typer(tiles_app, name="tiles")
app.add_typer(telemetry_app, name="telemetry")
app.command()(serve)


@app.command()
def init(
    crs: str = typer.Option(..., "--crs", help="the twin's metric CRS, e.g. EPSG:28992 or a UTM zone"),
    name: str = typer.Option("citytwin", "--name"),
    vertical_crs: str = typer.Option(None, "--vertical-crs", help="vertical datum of heights, e.g. EPSG:5709"),
) -> None:
    """Create the twin with its CRS (imports do this on their own when the twin is new)."""
    from citytwin.db.twin import init_twin

    with get_context().engine.begin() as conn:
        twin = init_twin(conn, name, crs, vertical_crs)
    typer.echo(f"twin {twin.name!r} in {twin.crs}" + (f" + {twin.vertical_crs}" if twin.vertical_crs else ""))


@app.command()
def synth(
    buildings: int = typer.Option(2000, "--buildings", min=1, help="number of buildings"),
    seed: int = typer.Option(42, "--seed"),
    out: Path = typer.Option(Path("data/demo-city"), "--out", help="output folder"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Generate a deterministic synthetic city (buildings, DEM, grid, sensors) as standard files."""
    from citytwin.synth import generate_city

    summary = generate_city(buildings, seed, out)
    emit(summary, as_json=as_json)


@app.command()
def summary(as_json: bool = typer.Option(False, "--json")) -> None:
    """What the twin holds."""
    from citytwin.db.summary import twin_summary

    with get_context().engine.connect() as conn:
        emit(twin_summary(conn), as_json=as_json)


@app.command()
def demo(
    buildings: int = typer.Option(2000, "--buildings", min=1),
    seed: int = typer.Option(42, "--seed"),
    out: Path = typer.Option(Path("data/demo-city"), "--out"),
    rain_mm_h: float = typer.Option(100.0, "--rain-mm-h", help="storm rain intensity (mm/h)"),
    hours: float = typer.Option(2.0, "--hours", help="storm duration (h)"),
    serve_map: bool = typer.Option(True, "--serve/--no-serve", help="serve the web map when done"),
    port: int = typer.Option(None, "--port"),
) -> None:
    """The full demo: generate and load the city, run demand and a storm, build tiles, serve the map."""
    import subprocess
    import sys

    from citytwin.scenarios.demo import load_demo_city, run_demo_scenarios

    ctx = get_context()
    log = typer.echo
    log(f"database: {ctx.database_url}")
    summary = load_demo_city(ctx.engine, out_dir=out, buildings=buildings, seed=seed, log=log)
    counts = summary["counts"]
    log(f"twin {summary['name']!r} in {summary['crs']}: {counts['buildings']} buildings, "
        f"{counts['customers']} customers, {counts['feeders']} feeders, {counts['datastreams']} datastreams")
    run_demo_scenarios(ctx.engine, ctx.settings.data_dir, ctx.settings.tiles_dir, rain_mm_h=rain_mm_h, hours=hours,
                       log=log, dask_scheduler=ctx.settings.dask_scheduler)
    if not serve_map:
        from citytwin.db.summary import twin_summary

        with ctx.engine.connect() as conn:
            emit(twin_summary(conn), as_json=False)  # now with the runs just made
        return
    from citytwin.api.auth import create_key

    with ctx.engine.begin() as conn:
        key = create_key(conn, "demo", ["admin"])
    log(f"API key for the scenario panel (admin scope): {key}")
    env = {**os.environ, "CITYTWIN_DATABASE_URL": ctx.database_url}
    helpers = [subprocess.Popen([sys.executable, "-m", "citytwin", "telemetry", "simulate"], env=env,
                                stdout=subprocess.DEVNULL)]
    if ctx.settings.mqtt_url:
        helpers.append(subprocess.Popen([sys.executable, "-m", "citytwin", "telemetry", "ingest"], env=env,
                                        stdout=subprocess.DEVNULL))
    try:
        serve(host=None, port=port, workers=1)
    finally:
        for helper in helpers:
            helper.terminate()
