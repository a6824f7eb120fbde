"""The twin graph over REST: relationships, what an asset serves, sensors on a feeder; DTDL models."""

from __future__ import annotations

from fastapi import APIRouter, Request

from citytwin.api.auth import require_scope

router = APIRouter(prefix="/api/graph", tags=["Twin graph"], dependencies=[require_scope("read", for_read=True)])


def _records(frame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


@router.get("/relationships", summary="Edges of the twin graph, optionally of one kind")
def relationships(request: Request, relationship: str | None = None, limit: int = 10000) -> dict:
    from citytwin.graph.queries import relationships as edges

    with request.app.state.engine.connect() as conn:
        frame = edges(conn)
    if relationship:
        frame = frame[frame["relationship"] == relationship]
    return {"count": int(len(frame)), "relationships": _records(frame.head(max(1, min(limit, 100000))))}


@router.get("/assets/{asset_id}/buildings", summary="Every building an asset (substation, feeder, switch...) serves")
def served(request: Request, asset_id: str) -> dict:
    from citytwin.graph.queries import buildings_served_by

    with request.app.state.engine.connect() as conn:
        frame = buildings_served_by(conn, asset_id)
    return {"asset_id": asset_id, "buildings": _records(frame), "customers": int(frame["customers"].sum())}


@router.get("/assets/{asset_id}/critical-customers", summary="Critical customers (hospitals, schools) behind an asset")
def critical(request: Request, asset_id: str) -> dict:
    from citytwin.graph.queries import critical_customers_behind

    with request.app.state.engine.connect() as conn:
        return {"asset_id": asset_id, "buildings": _records(critical_customers_behind(conn, asset_id))}


@router.get("/feeders/{feeder}/sensors", summary="Every sensor on a feeder")
def sensors(request: Request, feeder: str) -> dict:
    from citytwin.graph.queries import sensors_on

    with request.app.state.engine.connect() as conn:
        return {"feeder": feeder, "sensors": _records(sensors_on(conn, feeder))}


@router.get("/dtdl", summary="The twin's model as DTDL v3 interfaces")
def dtdl() -> list[dict]:
    from citytwin.graph.dtdl import all_interfaces

    return all_interfaces()
