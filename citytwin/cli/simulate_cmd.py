"""``citytwin simulate flood|energy|storm``: model runs on the twin, stored as simulation runs."""

from __future__ import annotations

from pathlib import Path

import typer

from citytwin.cli.context import get_context
from citytwin.cli.output import emit

simulate_app = typer.Typer(help="Run models on the twin and store the results.", no_args_is_help=True)


DASK_HELP = ("run on a dask.distributed client: the scheduler in CITYTWIN_DASK_SCHEDULER, else a LocalCluster "
             "(--no-dask: in this process, no worker start-up; ignored when a scheduler is configured)")


def _client(ctx, use_dask: bool):
    """The scenarios' Dask client; a configured scheduler is always used (it is what the operator chose)."""
    if not use_dask and not ctx.settings.dask_scheduler:
        return None
    from citytwin.scenarios.cluster import get_client

    return get_client(ctx.settings.dask_scheduler)


@simulate_app.command("flood")
def flood(
    rain_mm_h: float = typer.Option(..., "--rain-mm-h", help="rain intensity in mm/h"),
    hours: float = typer.Option(1.0, "--hours", help="storm duration in hours"),
    dem: Path = typer.Option(None, "--dem", help="DEM GeoTIFF (default: the twin's terrain)"),
    out: Path = typer.Option(None, "--out", help="where to write the gridded result (NetCDF)"),
    manning: float = typer.Option(0.03, "--manning", help="Manning's n (s/m^1/3)"),
    dask: bool = typer.Option(True, "--dask/--no-dask", help=DASK_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Flood from rain on the twin's terrain and buildings; per-building and per-asset max depth stored."""
    from citytwin.scenarios.flood_run import FloodRequest, simulate_flood_on_twin

    ctx = get_context()
    summary = simulate_flood_on_twin(ctx.engine, ctx.settings.data_dir,
                                     FloodRequest(rain_mm_h=rain_mm_h, hours=hours, dem_path=dem, out=out,
                                                  manning=manning), client=_client(ctx, dask))
    emit(summary, as_json=as_json)


@simulate_app.command("energy")
def energy(
    year: int = typer.Option(None, "--year", help="year of the run: default the EPW file's year, else 2025; "
                             "a typical-year EPW is placed on it, measured weather must match it"),
    weather: str = typer.Option("synthetic", "--weather", help="'synthetic', a climate name, or an EPW file"),
    climate: str = typer.Option("temperate", "--climate", help="climate of the synthetic weather"),
    archetypes: Path = typer.Option(None, "--archetypes", help="CSV/YAML table overriding archetype figures"),
    dask: bool = typer.Option(True, "--dask/--no-dask", help=DASK_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Hourly demand of every building for a year, summed onto transformers, feeders and substations."""
    from citytwin.scenarios.energy_run import EnergyRequest, simulate_energy_on_twin

    ctx = get_context()
    summary = simulate_energy_on_twin(ctx.engine, ctx.settings.data_dir,
                                      EnergyRequest(year=year, weather=weather, climate=climate,
                                                    archetypes_path=archetypes), client=_client(ctx, dask))
    emit(summary, as_json=as_json)


@simulate_app.command("storm")
def storm(
    rain_mm_h: float = typer.Option(..., "--rain-mm-h"),
    hours: float = typer.Option(1.0, "--hours"),
    dask: bool = typer.Option(True, "--dask/--no-dask", help=DASK_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The storm what-if: flood, failed assets, outages, FLISR restoration, outage records."""
    from citytwin.scenarios.storm import StormRequest, run_storm

    ctx = get_context()
    summary = run_storm(ctx.engine, ctx.settings.data_dir, StormRequest(rain_mm_h=rain_mm_h, hours=hours),
                        client=_client(ctx, dask))
    if not as_json:
        summary = {k: v for k, v in summary.items() if k != "restoration_plan"} | {
            "restoration_steps": len(summary.get("restoration_plan", []))}
    emit(summary, as_json=as_json)
