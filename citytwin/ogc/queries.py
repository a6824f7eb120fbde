"""SQL for OGC feature queries, built from the declared collection and bound parameters."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Connection, text

from citytwin.errors import InputError, NotFoundError
from citytwin.ogc.collections import Collection
from citytwin.ogc.params import Bbox


def _select(collection: Collection) -> str:
    props = ", ".join(f"{expr} AS \"{name}\"" for name, expr in collection.properties.items())
    return (f"SELECT {collection.id_expr} AS fid, ST_AsGeoJSON(ST_Transform({collection.geom_expr}, 4326), 7) AS geom"
            f"{', ' + props if props else ''} FROM {collection.from_sql}")


def _feature(row, collection: Collection) -> dict:
    mapping = row._mapping
    properties = {name: _jsonable(mapping[name]) for name in collection.properties}
    return {"type": "Feature", "id": mapping["fid"],
            "geometry": json.loads(mapping["geom"]) if mapping["geom"] else None,
            "properties": properties}


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _cursor_value(collection: Collection, after: str) -> object:
    if collection.id_is_integer:
        try:
            return int(after)
        except ValueError:
            raise InputError(f"after must be a feature id of {collection.id!r}") from None
    return after


def query_items(conn: Connection, collection: Collection, *, srid: int, bbox: Bbox | None, limit: int,
                interval: tuple[datetime | None, datetime | None] | None, after: str | None) -> tuple[list[dict], bool]:
    """One page of features ordered by id; returns (features, has_more)."""
    where, params = [f"{collection.geom_expr} IS NOT NULL"], {"limit": limit + 1, "srid": srid}
    if bbox is not None:
        # Densify the lon/lat box before projecting: its edges are curves in the twin's CRS.
        where.append(f"ST_Intersects({collection.geom_expr}, ST_Transform(ST_Segmentize("
                     f"ST_MakeEnvelope(:minx, :miny, :maxx, :maxy, 4326), 0.0001), :srid))")
        params.update(minx=bbox.minx, miny=bbox.miny, maxx=bbox.maxx, maxy=bbox.maxy)
    if interval is not None and collection.datetime_expr:
        start, end = interval
        if start is not None:
            where.append(f"{collection.datetime_expr} >= :start")
            params["start"] = start
        if end is not None:
            where.append(f"{collection.datetime_expr} <= :end")
            params["end"] = end
    if after is not None:
        where.append(f"{collection.id_expr} > :after")
        params["after"] = _cursor_value(collection, after)
    sql = f"{_select(collection)} WHERE {' AND '.join(where)} ORDER BY {collection.id_expr} LIMIT :limit"
    rows = conn.execute(text(sql), params).all()
    features = [_feature(row, collection) for row in rows[:limit]]
    return features, len(rows) > limit


def query_item(conn: Connection, collection: Collection, feature_id: str) -> dict:
    value = _cursor_value(collection, feature_id) if collection.id_is_integer else feature_id
    row = conn.execute(text(f"{_select(collection)} WHERE {collection.id_expr} = :fid"), {"fid": value}).first()
    if row is None:
        raise NotFoundError(f"no feature {feature_id!r} in collection {collection.id!r}")
    return _feature(row, collection)


def collection_extent(conn: Connection, collection: Collection) -> list[float] | None:
    row = conn.execute(text(
        f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT "
        f"ST_Transform(ST_SetSRID(ST_Extent({collection.geom_expr})::geometry, "
        f"(SELECT srid FROM twin)), 4326) AS e FROM {collection.from_sql}) s")).first()
    return [float(v) for v in row] if row and row[0] is not None else None
