"""Scenarios as jobs: ``POST /api/scenarios`` -> 202 with a run id; status, progress and results."""

from __future__ import annotations

import io
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from citytwin.api.auth import require_scope
from citytwin.errors import InputError, NotFoundError

router = APIRouter(prefix="/api/scenarios", tags=["Scenarios"])
read_scope = require_scope("read", for_read=True)


class StormIn(BaseModel):
    """Storm parameters: a constant rain intensity over a duration."""

    model_config = ConfigDict(extra="forbid")
    rain_mm_h: float = Field(..., gt=0, le=500, description="rain intensity (mm/h)")
    hours: float = Field(1.0, gt=0, le=24, description="storm duration (h)")
    manning: float = Field(0.03, gt=0, le=0.3, description="Manning's n (s/m^1/3)")


def _run_row(request: Request, run_id: int) -> dict:
    from citytwin.scenarios.runs import get_run

    with request.app.state.engine.connect() as conn:
        run = get_run(conn, run_id)
    if run["kind"] != "storm":
        raise NotFoundError(f"run {run_id} is a {run['kind']} run, not a scenario")
    return run


def _run_on_cluster(engine, settings, storm, run_id: int) -> dict:
    """The job: the storm on the process's shared Dask client (started by the first job, then reused)."""
    from citytwin.scenarios.cluster import get_client
    from citytwin.scenarios.runs import fail_run
    from citytwin.scenarios.storm import run_storm

    try:
        client = get_client(settings.dask_scheduler)
    except Exception as exc:  # an unreachable scheduler: the run says so instead of staying 'running'
        fail_run(engine, run_id, f"no Dask scheduler at {settings.dask_scheduler or 'LocalCluster'}: {exc}")
        raise
    return run_storm(engine, settings.data_dir, storm, client=client, run_id=run_id)


@router.post("", status_code=202, summary="Start a storm scenario (flood -> outages -> restoration)",
             dependencies=[require_scope("admin")])
def start(request: Request, body: StormIn) -> JSONResponse:
    from citytwin.scenarios.jobs import submit
    from citytwin.scenarios.runs import create_run
    from citytwin.scenarios.storm import StormRequest

    engine, settings = request.app.state.engine, request.app.state.settings
    run_id = create_run(engine, "storm", body.model_dump())
    storm = StormRequest(rain_mm_h=body.rain_mm_h, hours=body.hours, manning=body.manning)
    submit(lambda: _run_on_cluster(engine, settings, storm, run_id))
    return JSONResponse({"run_id": run_id, "status": "running", "href": f"/api/scenarios/{run_id}"},
                        status_code=202, headers={"Location": f"/api/scenarios/{run_id}"})


@router.get("", summary="Scenario runs, newest first", dependencies=[read_scope])
def list_runs(request: Request) -> list[dict]:
    from sqlalchemy import text

    with request.app.state.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, progress, parameters, created_at, finished_at FROM "
                                 "simulation_runs WHERE kind = 'storm' ORDER BY id DESC LIMIT 100")).all()
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r._mapping.items()} for r in rows]


@router.get("/{run_id}", summary="Status, progress and summary of a scenario", dependencies=[read_scope])
def status(request: Request, run_id: int) -> dict:
    return _run_row(request, run_id)


@router.get("/{run_id}/buildings", summary="Per-building results (for recolouring the 3D buildings)",
            dependencies=[read_scope])
def buildings(request: Request, run_id: int) -> dict:
    from sqlalchemy import text

    _run_row(request, run_id)
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(text("SELECT building_id, max_depth_m, arrival_time_s, outage_state, annual_kwh "
                                 "FROM building_results WHERE run_id = :r"), {"r": run_id}).all()
    return {"run_id": run_id, "buildings": {str(r.building_id): {"max_depth_m": r.max_depth_m,
                                                                 "arrival_time_s": r.arrival_time_s,
                                                                 "outage_state": r.outage_state,
                                                                 "annual_kwh": r.annual_kwh} for r in rows}}


@router.get("/{run_id}/results", summary="Results as GeoJSON, GeoParquet (buildings) or NetCDF (flood grid)",
            dependencies=[read_scope])
def results(request: Request, run_id: int, format: Literal["geojson", "geoparquet", "netcdf"] = "geojson") -> Response:
    run = _run_row(request, run_id)
    if run["status"] != "succeeded":
        raise InputError(f"run {run_id} has no results yet (status {run['status']})")
    if format == "netcdf":
        path = run.get("result_path")
        if not path:
            raise NotFoundError(f"run {run_id} has no gridded result")
        return FileResponse(path, media_type="application/x-netcdf", filename=f"scenario-{run_id}.nc")
    from citytwin.client import Twin

    twin = Twin(request.app.state.engine, request.app.state.settings.data_dir)
    result = twin.scenario(run_id)
    frame = result.buildings.to_crs("EPSG:4326")
    if format == "geoparquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        return Response(buffer.getvalue(), media_type="application/vnd.apache.parquet",
                        headers={"Content-Disposition": f'attachment; filename="scenario-{run_id}.parquet"'})
    return Response(frame.to_json(drop_id=True), media_type="application/geo+json")
