"""OGC API - Features Part 1 Core under ``/ogc``: landing page, conformance, collections, items."""

from __future__ import annotations

from typing import Callable
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from citytwin.api.auth import require_scope
from citytwin.api.errors import describe_validation
from citytwin.db.twin import require_twin
from citytwin.errors import InputError, NotFoundError
from citytwin.ogc.collections import COLLECTIONS, Collection
from citytwin.ogc.params import (CRS84, DEFAULT_LIMIT, ITEMS_PARAMS, MAX_LIMIT, Bbox, parse_bbox,
                                 parse_bbox_crs, parse_datetime, parse_limit, reject_unknown)
from citytwin.ogc.queries import collection_extent, query_item, query_items


class OGCRoute(APIRoute):
    """OGC API - Features answers a bad query parameter with 400 (not FastAPI's 422)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route_handler(request: Request):
            try:
                return await handler(request)
            except RequestValidationError as exc:
                detail, problems = describe_validation(exc)
                raise InputError(detail, details=problems) from None

        return route_handler


router = APIRouter(prefix="/ogc", tags=["OGC API - Features"], route_class=OGCRoute,
                   dependencies=[require_scope("read", for_read=True)])
GEOJSON = "application/geo+json"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
]
F_PARAM = Query(None, description="output format; every response here is JSON / GeoJSON")


def format_only(request: Request, f: str | None = F_PARAM) -> None:
    """Resources that take no query parameters but ``f``: anything else is a 400."""
    reject_unknown(dict(request.query_params), {"f"})


class ItemsQuery:
    """Query parameters of ``/items``, declared for the OpenAPI document and parsed into typed values."""

    def __init__(
        self,
        request: Request,
        bbox: str | None = Query(None, description="minlon,minlat,maxlon,maxlat (or 6 numbers with heights), "
                                                   "in CRS84 unless bbox-crs says otherwise",
                                 examples=["7.80,48.40,7.82,48.42"]),
        bbox_crs: str | None = Query(None, alias="bbox-crs", description=f"only {CRS84} is supported"),
        limit: int = Query(DEFAULT_LIMIT, ge=1, description=f"page size; larger values are clamped to the "
                                                            f"server's maximum ({MAX_LIMIT:,} by default)"),
        datetime: str | None = Query(None, description="RFC 3339 instant or interval start/end (either end "
                                                       "may be '..'); filters collections with a time, "
                                                       "e.g. outages by start_time"),
        after: str | None = Query(None, description="paging cursor: the id of the last feature of the "
                                                    "previous page (follow the 'next' link)"),
        f: str | None = F_PARAM,
    ) -> None:
        reject_unknown(dict(request.query_params), ITEMS_PARAMS)
        parse_bbox_crs(bbox_crs)
        self.bbox: Bbox | None = parse_bbox(bbox)
        maximum = int(getattr(request.app.state.settings, "ogc_max_limit", MAX_LIMIT) or MAX_LIMIT)
        self.limit: int = parse_limit(limit, maximum)
        self.interval = parse_datetime(datetime)
        self.after = after

def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/ogc"


def get_collection(collection_id: str) -> Collection:
    """Path dependency: a declared collection, or 404."""
    collection = COLLECTIONS.get(collection_id)
    if collection is None:
        raise NotFoundError(f"no collection {collection_id!r}; see /ogc/collections")
    return collection


def _collection_doc(request: Request, collection: Collection, extent: list[float] | None) -> dict:
    base = _base(request)
    doc = {
        "id": collection.id, "title": collection.title, "description": collection.description,
        "itemType": "feature", "crs": ["http://www.opengis.net/def/crs/OGC/1.3/CRS84"],
        "links": [
            {"href": f"{base}/collections/{collection.id}", "rel": "self", "type": "application/json"},
            {"href": f"{base}/collections/{collection.id}/items", "rel": "items", "type": GEOJSON},
        ],
    }
    if extent:
        doc["extent"] = {"spatial": {"bbox": [extent], "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}}
    return doc


@router.get("", summary="Landing page", dependencies=[Depends(format_only)])
@router.get("/", include_in_schema=False, dependencies=[Depends(format_only)])
def landing(request: Request) -> dict:
    base = _base(request)
    root = str(request.base_url).rstrip("/")
    return {
        "title": "citytwin", "description": "The city's buildings, grid assets, sensors and outages",
        "links": [
            {"href": base, "rel": "self", "type": "application/json"},
            {"href": f"{root}/openapi.json", "rel": "service-desc", "type": "application/vnd.oai.openapi+json;version=3.0"},
            {"href": f"{root}/docs", "rel": "service-doc", "type": "text/html"},
            {"href": f"{base}/conformance", "rel": "conformance", "type": "application/json"},
            {"href": f"{base}/collections", "rel": "data", "type": "application/json"},
        ],
    }


@router.get("/conformance", summary="Conformance classes", dependencies=[Depends(format_only)])
def conformance() -> dict:
    return {"conformsTo": CONFORMANCE}


@router.get("/collections", summary="Feature collections", dependencies=[Depends(format_only)])
def collections(request: Request) -> dict:
    engine = request.app.state.engine
    with engine.connect() as conn:
        docs = [_collection_doc(request, c, collection_extent(conn, c)) for c in COLLECTIONS.values()]
    base = _base(request)
    return {"collections": docs, "links": [{"href": f"{base}/collections", "rel": "self", "type": "application/json"}]}


@router.get("/collections/{collection_id}", summary="One collection", dependencies=[Depends(format_only)])
def collection(request: Request, coll: Collection = Depends(get_collection)) -> dict:
    with request.app.state.engine.connect() as conn:
        return _collection_doc(request, coll, collection_extent(conn, coll))


@router.get("/collections/{collection_id}/items", summary="Features, filtered by bbox and datetime")
def items(request: Request, coll: Collection = Depends(get_collection),
          query: ItemsQuery = Depends()) -> JSONResponse:
    with request.app.state.engine.connect() as conn:
        twin = require_twin(conn)
        features, more = query_items(conn, coll, srid=twin.srid, bbox=query.bbox, limit=query.limit,
                                     interval=query.interval, after=query.after)
    url = f"{_base(request)}/collections/{coll.id}/items"
    links = [{"href": str(request.url), "rel": "self", "type": GEOJSON},
             {"href": f"{_base(request)}/collections/{coll.id}", "rel": "collection", "type": "application/json"}]
    if more and features:
        next_params = {k: v for k, v in request.query_params.items() if k != "after"} | {
            "after": str(features[-1]["id"]), "limit": str(query.limit)}
        query = urlencode(next_params)
        links.append({"href": f"{url}?{query}", "rel": "next", "type": GEOJSON})
    body = {"type": "FeatureCollection", "features": features, "numberReturned": len(features), "links": links}
    return JSONResponse(body, media_type=GEOJSON)


@router.get("/collections/{collection_id}/items/{feature_id}", summary="One feature",
            dependencies=[Depends(format_only)])
def item(request: Request, feature_id: str, coll: Collection = Depends(get_collection)) -> JSONResponse:
    with request.app.state.engine.connect() as conn:
        feature = query_item(conn, coll, feature_id)
    base = _base(request)
    feature["links"] = [
        {"href": f"{base}/collections/{coll.id}/items/{feature_id}", "rel": "self", "type": GEOJSON},
        {"href": f"{base}/collections/{coll.id}", "rel": "collection", "type": "application/json"},
    ]
    return JSONResponse(feature, media_type=GEOJSON)
