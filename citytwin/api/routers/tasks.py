"""Commands to devices: ``POST /api/tasks`` (SensorThings Task shape), ``GET /api/tasks/{id}``, and the
desired vs reported state of a device, ``GET /api/devices/{thing}/state``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from citytwin.api.auth import require_scope
from citytwin.api.deps import get_engine
from citytwin.telemetry import commands

router = APIRouter(tags=["Commands (SensorThings Tasking)"])


class CapabilityRef(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    id: int = Field(alias="@iot.id")


class TaskIn(BaseModel):
    """A Task: which capability, its parameters, and (extension) how long the device has to confirm."""

    model_config = ConfigDict(extra="forbid")
    TaskingCapability: CapabilityRef
    taskingParameters: dict
    expiresIn: float | None = Field(None, description="seconds until an unconfirmed task expires (60)")


@router.post("/api/tasks", status_code=201, summary="Create a task (sent to the device through the outbox)",
             dependencies=[require_scope("commands")])
def create_task(request: Request, task: TaskIn, engine: Engine = Depends(get_engine)) -> JSONResponse:
    with engine.begin() as conn:
        created = commands.create_task(conn, task.TaskingCapability.id, task.taskingParameters,
                                       task.expiresIn)
    location = str(request.url_for("get_task", task_id=created["@iot.id"]))
    return JSONResponse(created, status_code=201, headers={"Location": location})


@router.get("/api/tasks/{task_id}", summary="A task with its status history",
            dependencies=[require_scope("read", for_read=True)])
def get_task(task_id: int, engine: Engine = Depends(get_engine)) -> dict:
    with engine.connect() as conn:
        return commands.get_task(conn, task_id)


@router.get("/api/devices/{thing}/state", summary="Desired and reported state of a device",
            dependencies=[require_scope("read", for_read=True)])
def device_state(thing: str, engine: Engine = Depends(get_engine)) -> dict:
    with engine.connect() as conn:
        return {"thing": thing, "state": commands.device_state(conn, thing)}
