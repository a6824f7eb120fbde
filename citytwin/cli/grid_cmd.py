"""``citytwin grid reliability PATH``: IEEE 1366 indices for an RBTS folder, a pandapower JSON or the twin."""

from __future__ import annotations

import typer

from citytwin.cli.context import get_context
from citytwin.cli.output import emit
from citytwin.errors import InputError

grid_app = typer.Typer(help="Grid analyses.", no_args_is_help=True)


@grid_app.command("reliability")
def reliability(
    path: str = typer.Argument(..., help="RBTS-style folder, pandapower JSON, grid GeoPackage, or 'twin'"),
    method: str = typer.Option("analytical", "--method", help="analytical | monte-carlo"),
    years: int = typer.Option(10_000, "--years", min=1, help="sampled years (monte-carlo)"),
    seed: int = typer.Option(0, "--seed"),
    overrides: list[str] = typer.Option([], "--set", help="COMPONENT.FIELD=VALUE, repeatable"),
    use_dask: bool = typer.Option(False, "--dask", help="Monte Carlo batches on Dask"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """SAIFI, SAIDI, CAIDI, ASAI, ENS and AENS, system-wide, per feeder and per load point."""
    from pathlib import Path

    from citytwin.models.grid import apply_overrides, reliability_report

    if method not in ("analytical", "monte-carlo"):
        raise InputError(f"--method must be 'analytical' or 'monte-carlo', got {method!r}")
    if path == "twin":
        from citytwin.db.grid import read_grid as read_twin_grid

        with get_context().engine.connect() as conn:
            grid = read_twin_grid(conn)
    else:
        from citytwin.io.grids import read_grid

        if not Path(path).exists():
            raise InputError(f"{path}: no such file or directory")
        grid = read_grid(Path(path))
    if overrides:
        grid = apply_overrides(grid, overrides)
    client = None
    if use_dask and method == "monte-carlo":
        from citytwin.scenarios.cluster import get_client

        client = get_client(get_context().settings.dask_scheduler)
    report = reliability_report(grid, method=method, years=years, seed=seed, client=client)
    if as_json:
        emit(report, as_json=True)
    else:
        system = report["system"]
        emit(report, as_json=False, text="  ".join(f"{k} {v:.6g}" for k, v in system.items()))


graph_app = typer.Typer(help="The twin graph and its DTDL model.", no_args_is_help=True)


@graph_app.command("export-dtdl")
def export_dtdl(out: str = typer.Option("dtdl", "--out", help="folder for one <Interface>.json per model")) -> None:
    """Write the twin's model as DTDL v3 interfaces (for Azure Digital Twins and other DTDL platforms)."""
    from pathlib import Path

    from citytwin.graph.dtdl import write_interfaces

    paths = write_interfaces(Path(out))
    typer.echo(f"{len(paths)} DTDL interfaces written to {out}/")


@graph_app.command("served-by")
def served_by(asset_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Every building an asset (substation, feeder, transformer, switch, section) serves."""
    from citytwin.graph.queries import buildings_served_by

    with get_context().engine.connect() as conn:
        frame = buildings_served_by(conn, asset_id)
    emit({"asset_id": asset_id, "buildings": int(len(frame)), "customers": int(frame["customers"].sum()),
          "by_use": frame.groupby("use").size().to_dict()}, as_json=as_json)
