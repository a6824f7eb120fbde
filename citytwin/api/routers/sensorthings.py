"""OGC SensorThings API 1.1 (read) under ``/sta/v1.1``, plus creating Observations (the ingest path).

Reads: Things, Locations, Sensors, ObservedProperties, Datastreams, Observations and the Tasking
entities, with ``$top $skip $count $filter $orderby $select $expand`` and keyset ``@iot.nextLink``
paging (see ``citytwin.telemetry.sta_query``). ``POST .../Observations`` stores one observation
through the same validation and batch writer as MQTT and ``POST /api/telemetry/observations``.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from citytwin.api.auth import require_scope
from citytwin.api.deps import get_engine
from citytwin.api.routers.telemetry import ingest_body
from citytwin.errors import InputError
from citytwin.telemetry.sta_read import read_path
from citytwin.telemetry.validate import NO_TIME, parse_times

PREFIX = "/sta/v1.1"
router = APIRouter(prefix=PREFIX, tags=["SensorThings API"])
read_scope = require_scope("read", for_read=True)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


@router.get("", summary="Service root: entity sets and conformance", dependencies=[read_scope])
@router.get("/{path:path}", summary="Entity sets, entities and navigation (SensorThings resource paths)",
            dependencies=[read_scope])
def read(request: Request, path: str = "", engine: Engine = Depends(get_engine)) -> JSONResponse:
    with engine.connect() as conn:
        body = read_path(conn, path, dict(request.query_params), _base(request))
    return JSONResponse(body)


async def _create(request: Request, topic: str, datastream: int | None) -> JSONResponse:
    body = await request.body()
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    result = await run_in_threadpool(ingest_body, request.app, body, topic)
    if result.dead:
        raise InputError(f"observation rejected ({result.dead[0].reason}): {result.dead[0].detail}")
    ds = datastream if datastream is not None else doc["Datastream"]["@iot.id"]
    micros = int(parse_times([doc["phenomenonTime"]])[0])
    location = f"{_base(request)}/Observations('{ds}_{micros}')" if micros != NO_TIME else None
    return JSONResponse({"@iot.selfLink": location, "stored": result.stored == 1}, status_code=201,
                        headers={"Location": location} if location else None)


@router.post("/Observations", status_code=201, summary="Create an Observation",
             dependencies=[require_scope("ingest")])
async def create_observation(request: Request) -> JSONResponse:
    return await _create(request, "v1.1/Observations", None)


@router.post("/Datastreams({datastream_id})/Observations", status_code=201,
             summary="Create an Observation of a Datastream", dependencies=[require_scope("ingest")])
async def create_datastream_observation(request: Request, datastream_id: int) -> JSONResponse:
    return await _create(request, f"v1.1/Datastreams({datastream_id})/Observations", datastream_id)
