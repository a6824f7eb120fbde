"""An energy run on the twin: a year of hourly demand per building, summed onto the grid, stored."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, text

from citytwin.db.copy import copy_frame
from citytwin.errors import InputError
from citytwin.scenarios.runs import create_run, fail_run, finish_run, run_dir, set_progress


DEFAULT_YEAR = 2025  # year of synthetic weather and of typical-year EPW files when none is asked for


@dataclass
class EnergyRequest:
    year: int | None = None         # None: the EPW file's own year, else DEFAULT_YEAR
    weather: str = "synthetic"      # "synthetic", a climate name, or an EPW path
    climate: str = "temperate"
    archetypes_path: Path | None = None


def _epw_years(path: Path) -> np.ndarray:
    """The distinct years in an EPW file's year field (one for measured weather, several for a TMY)."""
    try:
        years = pd.read_csv(path, skiprows=8, header=None, usecols=[0], encoding="latin-1").iloc[:, 0]
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return np.array([], dtype=np.int64)  # read_epw names what is wrong with the file
    return pd.to_numeric(years, errors="coerce").dropna().astype(np.int64).unique()


def _epw_weather(path: Path, year: int | None):
    """An EPW file on the asked ``year``: measured weather must match it, a typical year is placed on it.

    A file whose records all carry one year is measured weather of that year; moving it to another
    year would put its weekdays and holidays on the wrong dates, so a different ``year`` is an error.
    A typical-year file (months from several years) is placed on ``year``; it has no 29 February,
    so a leap year is an error too rather than a year with a day of weather missing.
    """
    from calendar import isleap

    from citytwin.models.energy import read_epw

    years = _epw_years(path)
    if len(years) == 1:
        if year is not None and year != int(years[0]):
            raise InputError(f"weather file {path.name} holds measured weather of {int(years[0])}, not of the "
                             f"requested year {year}; leave the year out or ask for {int(years[0])}")
        return read_epw(path)
    year = DEFAULT_YEAR if year is None else year
    weather = read_epw(path, year=year)
    if isleap(year) and weather.sizes["time"] == 8760:
        raise InputError(f"weather file {path.name} is a typical year of 8,760 hours and cannot be placed on "
                         f"the leap year {year}; choose a year that is not a leap year")
    return weather


def _weather(request: EnergyRequest):
    """The hourly weather of the request; its year is the year of the run."""
    from citytwin.models.energy import CLIMATES, synthetic_weather

    year = DEFAULT_YEAR if request.year is None else request.year
    if request.weather in ("synthetic", "", None):
        return synthetic_weather(request.climate, year=year)
    if request.weather in CLIMATES:
        return synthetic_weather(request.weather, year=year)
    path = Path(request.weather)
    if not path.exists():
        raise InputError(f"weather must be 'synthetic', a climate ({', '.join(CLIMATES)}) or an EPW file; "
                         f"{request.weather!r} is none of these")
    return _epw_weather(path, request.year)


def simulate_energy_on_twin(engine: Engine, data_dir: Path, request: EnergyRequest, *, client=None) -> dict:
    """Demand for every building; per-building annual figures in the DB, per-asset hourly series on disk.

    ``building_results`` holds electricity (``annual_kwh``, ``peak_kw``); heating and cooling (kWh/yr,
    thermal) have no column there, so every building's four figures also go to
    ``runs/<id>/buildings.parquet``. With a ``dask.distributed`` client the demand is computed on it.
    """
    from citytwin.db.grid import read_grid
    from citytwin.db.read import read_buildings
    from citytwin.models.energy import asset_ratings, load_archetypes
    from citytwin.scenarios.energy_batches import simulate_bounded
    from citytwin.models.grid import assignments

    weather = _weather(request)
    year = int(pd.Timestamp(weather["time"].values[0]).year)
    archetypes = load_archetypes(request.archetypes_path) if request.archetypes_path else None
    with engine.connect() as conn:
        buildings = read_buildings(conn)
        grid = read_grid(conn)
    if buildings.empty:
        raise InputError("the twin has no buildings to simulate; import some first")
    run_id = create_run(engine, "energy", {"year": year, "weather": str(request.weather),
                                           "climate": request.climate})
    try:
        ids = buildings.set_index("source_id")["id"]
        table = pd.DataFrame(buildings.drop(columns=["id"]))
        links = assignments(grid).dropna(subset=["building_id"]) if len(grid.nodes) else None
        # Transformers and substations rated on their nodes, feeders by their head sections.
        ratings = asset_ratings(grid) if len(grid.nodes) else None
        set_progress(engine, run_id, 0.1, "energy")
        with client.as_current() if client is not None else nullcontext():
            # In batches of substations when the hourly series would not fit in memory at once.
            result = simulate_bounded(table, weather, links, archetypes=archetypes, ratings=ratings,
                                      unassigned="ignore")
        per_building = result.buildings
        frame = pd.DataFrame({"run_id": run_id,
                              "building_id": ids.reindex(per_building.index.astype(str)).to_numpy(),
                              "annual_kwh": per_building["electricity_kwh"].to_numpy(),
                              "peak_kw": per_building["electricity_peak_kw"].to_numpy(),
                              "heating_kwh": per_building["heating_kwh"].to_numpy(),
                              "cooling_kwh": per_building["cooling_kwh"].to_numpy()})
        frame = frame[frame["building_id"].notna()].astype({"building_id": "int64"})
        out = run_dir(data_dir, run_id) / "assets.nc"
        buildings_path = run_dir(data_dir, run_id) / "buildings.parquet"
        frame.drop(columns=["run_id"]).to_parquet(buildings_path, index=False)
        with engine.begin() as conn:
            copy_frame(conn, "building_results", frame, ["run_id", "building_id", "annual_kwh", "peak_kw"])
            if result.annual is not None:
                assets = result.annual
                asset_frame = pd.DataFrame({
                    "run_id": run_id, "asset_id": assets["asset"].to_numpy().astype(str),
                    "asset_kind": assets["level"].to_numpy().astype(str),
                    "annual_mwh": assets["electricity_kwh"].to_numpy() / 1000.0,
                    "peak_mw": assets["electricity_peak_kw"].to_numpy() / 1000.0,
                    "overloaded": assets["overload"].to_numpy().astype(bool)
                    if "overload" in assets else np.zeros(assets.sizes["asset"], dtype=bool)})
                copy_frame(conn, "asset_results", asset_frame,
                           ["run_id", "asset_id", "asset_kind", "annual_mwh", "peak_mw", "overloaded"])
        if result.assets is not None:
            _to_netcdf(result.assets, out)
        summary = {
            "run_id": run_id, "year": year, "buildings": int(len(frame)),
            "electricity_mwh": float(per_building["electricity_kwh"].sum() / 1000.0),
            "heating_mwh": float(per_building["heating_kwh"].sum() / 1000.0),
            "cooling_mwh": float(per_building["cooling_kwh"].sum() / 1000.0),
            "overloaded_assets": int(result.annual["overload"].sum()) if result.annual is not None
            and "overload" in result.annual else 0,
            "rated_assets": int(np.isfinite(result.annual["rating_kw"].to_numpy()).sum())
            if result.annual is not None else 0,
            "hourly_levels": result.hourly_levels, "batches": result.batches,
            "result_path": str(out) if result.assets is not None else None,
            "buildings_path": str(buildings_path),
            "report": {k: v for k, v in result.report.items() if isinstance(v, (int, float, str))},
        }
        finish_run(engine, run_id, summary, summary["result_path"])
        return summary
    except Exception as exc:
        fail_run(engine, run_id, str(exc))
        raise


def _to_netcdf(assets, out: Path) -> None:
    """Write the per-asset Dataset; string/object coordinates and attrs made NetCDF-safe."""
    import json

    clean = assets.copy()
    for name in list(clean.coords) + list(clean.data_vars):
        if clean[name].dtype == object:
            clean[name] = clean[name].astype(str)
    clean.attrs = {k: (json.dumps(v, default=str) if isinstance(v, (dict, list)) else v)
                   for k, v in clean.attrs.items()}
    clean.to_netcdf(out, engine="h5netcdf")


def latest_energy_run(engine: Engine) -> int | None:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id FROM simulation_runs WHERE kind = 'energy' AND status = 'succeeded' "
                                 "ORDER BY finished_at DESC LIMIT 1")).scalar()
