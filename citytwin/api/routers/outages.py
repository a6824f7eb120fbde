"""Outages for outage-management systems: ``/api/outages``, detection events, status and ETR updates."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from citytwin.api.auth import require_scope
from citytwin.errors import InputError
from citytwin.oms import store
from citytwin.ogc.params import parse_bbox

router = APIRouter(prefix="/api/outages", tags=["Outages (OMS)"])
read_scope = require_scope("read", for_read=True)
GEOJSON = "application/geo+json"


class OutageFilters(BaseModel):
    """Query parameters of the outage feed."""

    status: Literal["predicted", "confirmed", "partially_restored", "restored", "closed"] | None = None
    kind: Literal["unplanned", "planned", "simulated"] | None = None
    bbox: str | None = Field(None, description="minlon,minlat,maxlon,maxlat (CRS84)")
    since: datetime | None = Field(None, description="only outages started or updated since (RFC 3339)")
    limit: int = Field(1000, ge=1, le=10000)


class OutagePatch(BaseModel):
    """A status and/or ETR update from the OMS."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["predicted", "confirmed", "partially_restored", "restored", "closed"] | None = None
    etr: datetime | None = None
    etr_confidence: Literal["low", "medium", "high"] | None = None


Status = Literal["predicted", "confirmed", "partially_restored", "restored", "closed"]
Kind = Literal["unplanned", "planned", "simulated"]


def _filters(status: Status | None = Query(None), kind: Kind | None = Query(None), bbox: str | None = Query(None),
             since: datetime | None = Query(None), limit: int = Query(1000, ge=1, le=10000)) -> OutageFilters:
    """Query parameters, validated by FastAPI (422 naming the parameter on bad values)."""
    return OutageFilters(status=status, kind=kind, bbox=bbox, since=since, limit=limit)


@router.get("", summary="Outage feed (GeoJSON FeatureCollection)", dependencies=[read_scope])
def list_outages(request: Request, filters: OutageFilters = Depends(_filters)) -> JSONResponse:
    bbox = parse_bbox(filters.bbox)
    with request.app.state.engine.connect() as conn:
        features = store.list_outages(conn, status=filters.status, kind=filters.kind,
                                      bbox=(bbox.minx, bbox.miny, bbox.maxx, bbox.maxy) if bbox else None,
                                      since=filters.since, limit=filters.limit)
    return JSONResponse({"type": "FeatureCollection", "features": features, "numberReturned": len(features)},
                        media_type=GEOJSON)


@router.get("/summary", summary="Counts of active outages and customers out", dependencies=[read_scope])
def summary(request: Request) -> dict:
    with request.app.state.engine.connect() as conn:
        return store.outage_summary(conn)


@router.get("/{outage_id}", summary="One outage (GeoJSON Feature)", dependencies=[read_scope])
def get_outage(request: Request, outage_id: int) -> JSONResponse:
    with request.app.state.engine.connect() as conn:
        return JSONResponse(store.get_outage(conn, outage_id), media_type=GEOJSON)


@router.get("/{outage_id}/customers", summary="Affected service points and customers", dependencies=[read_scope])
def customers(request: Request, outage_id: int) -> dict:
    with request.app.state.engine.connect() as conn:
        rows = store.outage_customers(conn, outage_id)
    return {"outage_id": outage_id, "service_points": rows, "customers": sum(r["customers"] for r in rows)}


@router.patch("/{outage_id}", summary="Update status and ETR", dependencies=[require_scope("outages:write")])
def patch_outage(request: Request, outage_id: int, patch: OutagePatch) -> JSONResponse:
    if patch.status is None and patch.etr is None and patch.etr_confidence is None:
        raise InputError("nothing to update: give status, etr or etr_confidence")
    with request.app.state.engine.begin() as conn:
        feature = store.update_outage(conn, outage_id, status=patch.status, etr=patch.etr,
                                      etr_confidence=patch.etr_confidence)
        from citytwin.oms.webhooks import enqueue_event

        enqueue_event(conn, "outage.restored" if patch.status in ("restored", "closed") else "outage.updated", feature)
    return JSONResponse(feature, media_type=GEOJSON)


reliability_router = APIRouter(prefix="/api/reliability", tags=["Outages (OMS)"])


@reliability_router.get("", summary="IEEE 1366 indices per feeder for a period, from outage records",
                        dependencies=[read_scope])
def reliability(request: Request, start: datetime, end: datetime,
                kind: Literal["unplanned", "planned", "simulated"] | None = None) -> dict:
    if start.tzinfo is None or end.tzinfo is None:
        raise InputError("start and end need a time zone (RFC 3339, e.g. 2026-01-01T00:00:00Z)")
    with request.app.state.engine.connect() as conn:
        return store.reliability_indices(conn, start=start, end=end, kind=kind)


events_router = APIRouter(prefix="/api/od-events", tags=["Outages (OMS)"])
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL


class DetectionEventIn(BaseModel):
    """One meter event (MultiSpeak ``outageDetectionEvent``-like); unknown extra fields are ignored."""

    objectID: str = Field(..., min_length=1, max_length=200, pattern=NO_NUL,
                          description="the meter's service point id, or its building's source id")
    eventTime: AwareDatetime = Field(..., description="when the meter lost or regained power "
                                                      "(RFC 3339 with an offset)")
    outageEventType: Literal["Outage", "Restoration", "NoResponse"]
    outageDetectDeviceID: str | None = Field(None, max_length=200, pattern=NO_NUL)
    outageDetectDeviceType: str | None = Field(None, max_length=100, pattern=NO_NUL)


class DetectionEventsIn(BaseModel):
    """A batch of outage-detection events (at most 10,000; the request body limit applies too)."""

    model_config = ConfigDict(extra="forbid")
    events: list[DetectionEventIn] = Field(..., min_length=1, max_length=10_000)


@events_router.post("", summary="Outage-detection events (meter no-power / restoration)",
                    dependencies=[require_scope("outages:write")])
def od_events(request: Request, body: DetectionEventsIn) -> dict:
    """Infer outages from meter events.

    Webhooks get ``outage.created`` for new outages, ``outage.restored`` or ``outage.updated`` for the rest.
    """
    from citytwin.oms.detection import DetectionEvent, process_events
    from citytwin.oms.webhooks import announce_outages

    events = [DetectionEvent(e.objectID, e.outageEventType, e.eventTime, e.outageDetectDeviceID,
                             e.outageDetectDeviceType) for e in body.events]
    with request.app.state.engine.begin() as conn:
        result = process_events(conn, events)
        announce_outages(conn, result["outages"], created=result["outages_created"])
    return result
