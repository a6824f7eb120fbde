"""A flood run on the twin: its terrain and buildings in, gridded depths and per-building/asset maxima out."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, text

from citytwin.db.copy import copy_frame
from citytwin.errors import InputError
from citytwin.scenarios.runs import create_run, fail_run, finish_run, run_dir, set_progress


@dataclass
class FloodRequest:
    rain_mm_h: float
    hours: float
    dem_path: Path | None = None
    manning: float = 0.03
    output_interval_s: float = 600.0
    out: Path | None = None


def validate_flood_request(request: FloodRequest) -> None:
    if not np.isfinite(request.rain_mm_h) or request.rain_mm_h < 0:
        raise InputError(f"rain must be a non-negative number of mm/h, got {request.rain_mm_h}")
    if not np.isfinite(request.hours) or not 0 < request.hours <= 72:
        raise InputError(f"duration must be between 0 and 72 hours, got {request.hours}")


def store_flood_samples(conn: Connection, run_id: int, buildings: pd.DataFrame, assets: pd.DataFrame) -> None:
    """Per-building and per-asset max depth (m) and arrival time (s) of a run."""
    if not buildings.empty:
        frame = pd.DataFrame({"run_id": run_id, "building_id": buildings.index.to_numpy(),
                              "max_depth_m": buildings["max_depth"].to_numpy(),
                              "arrival_time_s": buildings["arrival_time"].to_numpy()})
        copy_frame(conn, "building_results", frame, ["run_id", "building_id", "max_depth_m", "arrival_time_s"])
    if not assets.empty:
        frame = pd.DataFrame({"run_id": run_id, "asset_id": assets.index.astype(str),
                              "asset_kind": assets["kind"].to_numpy(),
                              "max_depth_m": assets["max_depth"].to_numpy(),
                              "arrival_time_s": assets["arrival_time"].to_numpy()})
        copy_frame(conn, "asset_results", frame, ["run_id", "asset_id", "asset_kind", "max_depth_m", "arrival_time_s"])


# A DEM is split into Dask chunks only from this many cells on: below it the in-memory run (one
# thread, or bands on all cores from 200,000 cells) beats shipping chunks to worker processes and
# exchanging halos every block of steps.
CHUNK_MIN_CELLS = 1_000_000
MIN_CHUNK = 256  # cells per side; a chunk much smaller than this is mostly halo


def flood_chunks(shape: tuple[int, int], workers: int) -> dict[str, int] | None:
    """Chunk sizes ``{"y": rows, "x": cols}`` for a DEM of ``shape`` (rows, cols) on ``workers``, or None.

    None (run in memory) below :data:`CHUNK_MIN_CELLS`. Otherwise about one chunk per worker, split
    along the longer side first, no side smaller than :data:`MIN_CHUNK` cells.
    """
    ny, nx = shape
    if ny * nx < CHUNK_MIN_CELLS:
        return None
    workers = max(1, int(workers))
    rows = max(1, round((workers * ny / nx) ** 0.5))
    cols = max(1, -(-workers // rows))
    return {"y": max(MIN_CHUNK, -(-ny // rows)), "x": max(MIN_CHUNK, -(-nx // cols))}


def _result_path(data_dir: Path, run_id: int, out: Path | None) -> Path:
    """Where the gridded result goes: ``out`` made absolute (the run row outlives the working directory)."""
    return Path(out).expanduser().resolve() if out else run_dir(data_dir, run_id) / "flood.nc"


def flood_stage(engine: Engine, data_dir: Path, request: FloodRequest, run_id: int, *, client=None) -> dict:
    """Run the flood model on the twin's DEM with its buildings as obstacles; store results under ``run_id``.

    With a ``dask.distributed`` client and a DEM of at least :data:`CHUNK_MIN_CELLS` cells the DEM is
    chunked and the run is chunk-parallel on the client's workers (same results as in memory).
    """
    from citytwin.db.read import read_buildings, read_grid_assets
    from citytwin.db.terrain import terrain_path
    from citytwin.io.dem import read_dem
    from citytwin.models import flood
    from citytwin.scenarios.cluster import worker_count

    with engine.connect() as conn:
        dem_path = request.dem_path or terrain_path(conn)
        buildings = read_buildings(conn)
        assets = read_grid_assets(conn)
    dem = read_dem(dem_path)
    if dem.rio.crs is not None:
        # Each frame on its own: a twin with a grid but no buildings still needs its assets on the DEM.
        if len(buildings) and buildings.crs != dem.rio.crs:
            buildings = buildings.to_crs(dem.rio.crs)
        if len(assets) and assets.crs != dem.rio.crs:
            assets = assets.to_crs(dem.rio.crs)
    chunks = flood_chunks((dem.sizes["y"], dem.sizes["x"]), worker_count(client)) if client is not None else None
    if chunks is not None:
        dem = dem.chunk(chunks)
    set_progress(engine, run_id, 0.05, "flood")
    with client.as_current() if chunks is not None else nullcontext():
        result = flood.simulate(dem, rain=request.rain_mm_h, duration=request.hours * 3600.0,
                                manning=request.manning, obstacles=buildings if len(buildings) else None,
                                output_interval=request.output_interval_s)
        out = _result_path(data_dir, run_id, request.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.to_netcdf(out, engine="h5netcdf")
        if chunks is not None:
            # Only the two maps sampling needs come back from the workers, not the depth series.
            result = result.assign(max_depth=result["max_depth"].compute(),
                                   arrival_time=result["arrival_time"].compute())
    set_progress(engine, run_id, 0.6, "sampling")
    building_samples = flood.sample(result, buildings.set_index("id")) if len(buildings) else pd.DataFrame()
    asset_samples = flood.sample(result, assets.set_index("node_id")) if len(assets) else pd.DataFrame()
    if len(asset_samples):
        asset_samples["kind"] = assets.set_index("node_id").loc[asset_samples.index, "kind"].to_numpy()
    with engine.begin() as conn:
        store_flood_samples(conn, run_id, building_samples, asset_samples)
    mass = {k: v for k, v in result.attrs.items() if isinstance(v, (int, float))}
    return {
        "flood_result_path": str(out), "max_depth_m": float(result["max_depth"].max()),
        "flooded_buildings": int((building_samples.get("max_depth", pd.Series(dtype=float)) > 0.1).sum()),
        "flooded_assets": int((asset_samples.get("max_depth", pd.Series(dtype=float)) > 0.1).sum()),
        "dask_chunks": chunks, "mass_balance": mass,
    }


def simulate_flood_on_twin(engine: Engine, data_dir: Path, request: FloodRequest, *, client=None) -> dict:
    """A flood run of its own: create the run, run the flood stage, record success or failure."""
    validate_flood_request(request)
    parameters = {"rain_mm_h": request.rain_mm_h, "hours": request.hours,
                  "dem": str(request.dem_path) if request.dem_path else "twin", "manning": request.manning}
    run_id = create_run(engine, "flood", parameters)
    try:
        summary = {"run_id": run_id, **flood_stage(engine, data_dir, request, run_id, client=client)}
    except Exception as exc:
        fail_run(engine, run_id, str(exc))
        raise
    finish_run(engine, run_id, summary, summary["flood_result_path"])
    return summary
