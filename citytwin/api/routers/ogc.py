"""OGC API - Features Part 1 Core under ``/ogc``: landing page, conformance, collections, items."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from citytwin.api.auth import require_scope
from citytwin.db.twin import require_twin
from citytwin.errors import NotFoundError
from citytwin.ogc.collections import COLLECTIONS, Collection
from citytwin.ogc.params import (ITEMS_PARAMS, parse_bbox, parse_datetime, parse_limit,
                                 reject_unknown)
from citytwin.ogc.queries import collection_extent, query_item, query_items

router = APIRouter(prefix="/ogc", tags=["OGC API - Features"], dependencies=[require_scope("read", for_read=True)])
GEOJSON = "application/geo+json"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
]


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


@router.get("", summary="Landing page")
@router.get("/", include_in_schema=False)
def landing(request: Request) -> dict:
    reject_unknown(dict(request.query_params), {"f"})
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


@router.get("/conformance", summary="Conformance classes")
def conformance(request: Request) -> dict:
    reject_unknown(dict(request.query_params), {"f"})
    return {"conformsTo": CONFORMANCE}


@router.get("/collections", summary="Feature collections")
def collections(request: Request) -> dict:
    reject_unknown(dict(request.query_params), {"f"})
    engine = request.app.state.engine
    with engine.connect() as conn:
        docs = [_collection_doc(request, c, collection_extent(conn, c)) for c in COLLECTIONS.values()]
    base = _base(request)
    return {"collections": docs, "links": [{"href": f"{base}/collections", "rel": "self", "type": "application/json"}]}


@router.get("/collections/{collection_id}", summary="One collection")
def collection(request: Request, coll: Collection = Depends(get_collection)) -> dict:
    reject_unknown(dict(request.query_params), {"f"})
    with request.app.state.engine.connect() as conn:
        return _collection_doc(request, coll, collection_extent(conn, coll))


@router.get("/collections/{collection_id}/items", summary="Features, filtered by bbox and datetime")
def items(request: Request, coll: Collection = Depends(get_collection)) -> JSONResponse:
    params = dict(request.query_params)
    reject_unknown(params, ITEMS_PARAMS)
    bbox, limit = parse_bbox(params.get("bbox")), parse_limit(params.get("limit"))
    interval = parse_datetime(params.get("datetime"))
    with request.app.state.engine.connect() as conn:
        twin = require_twin(conn)
        features, more = query_items(conn, coll, srid=twin.srid, bbox=bbox, limit=limit, interval=interval,
                                     after=params.get("after"))
    url = f"{_base(request)}/collections/{coll.id}/items"
    links = [{"href": str(request.url), "rel": "self", "type": GEOJSON},
             {"href": f"{_base(request)}/collections/{coll.id}", "rel": "collection", "type": "application/json"}]
    if more and features:
        next_params = {k: v for k, v in params.items() if k != "after"} | {"after": str(features[-1]["id"]),
                                                                             "limit": str(limit)}
        query = urlencode(next_params)
        links.append({"href": f"{url}?{query}", "rel": "next", "type": GEOJSON})
    body = {"type": "FeatureCollection", "features": features, "numberReturned": len(features), "links": links}
    return JSONResponse(body, media_type=GEOJSON)


@router.get("/collections/{collection_id}/items/{feature_id}", summary="One feature")
def item(request: Request, feature_id: str, coll: Collection = Depends(get_collection)) -> JSONResponse:
    reject_unknown(dict(request.query_params), {"f"})
    with request.app.state.engine.connect() as conn:
        feature = query_item(conn, coll, feature_id)
    base = _base(request)
    feature["links"] = [
        {"href": f"{base}/collections/{coll.id}/items/{feature_id}", "rel": "self", "type": GEOJSON},
        {"href": f"{base}/collections/{coll.id}", "rel": "collection", "type": "application/json"},
    ]
    return JSONResponse(feature, media_type=GEOJSON)
