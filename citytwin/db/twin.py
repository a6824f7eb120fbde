"""Twin metadata: one twin per database, with a metric CRS chosen once."""

from __future__ import annotations

from dataclasses import dataclass

from pyproj import CRS
from sqlalchemy import Connection, text

from citytwin.errors import ConflictError, InputError, NotFoundError

# Geometry columns pinned to the twin's SRID when the twin is created: (table, column, type).
GEOMETRY_COLUMNS = (
    ("buildings", "footprint", "MultiPolygon"),
    ("buildings", "lod2", "MultiPolygonZ"),
    ("grid_nodes", "geom", "Point"),
    ("grid_sections", "geom", "LineString"),
    ("grid_switches", "geom", "Point"),
    ("terrain", "extent", "Polygon"),
    ("locations", "location", "Point"),
    ("outages", "geom", "MultiPolygon"),
)


@dataclass(frozen=True)
class Twin:
    name: str
    crs: str
    srid: int
    vertical_crs: str | None


def metric_srid(crs: str) -> int:
    """The EPSG code of a projected, metric CRS, or an InputError saying why it can't be the twin's."""
    try:
        parsed = CRS.from_user_input(crs)
    except Exception as exc:  # pyproj raises CRSError; any failure means the string is unusable
        raise InputError(f"unknown CRS {crs!r}: {exc}") from exc
    if parsed.is_compound:
        parsed = parsed.sub_crs_list[0]
    if not parsed.is_projected:
        raise InputError(f"the twin's CRS must be projected and metric; {crs!r} is {parsed.type_name}")
    unit = parsed.axis_info[0].unit_name if parsed.axis_info else ""
    if unit not in ("metre", "meter"):
        raise InputError(f"the twin's CRS must use metres; {crs!r} uses {unit!r}")
    epsg = parsed.to_epsg()
    if epsg is None:
        raise InputError(f"the twin's CRS {crs!r} has no EPSG code; choose an EPSG CRS")
    return epsg


def get_twin(conn: Connection) -> Twin | None:
    row = conn.execute(text("SELECT name, crs, srid, vertical_crs FROM twin WHERE id = 1")).first()
    return Twin(*row) if row else None


def require_twin(conn: Connection) -> Twin:
    twin = get_twin(conn)
    if twin is None:
        raise NotFoundError("this database holds no twin yet: import data or run `citytwin init --crs EPSG:n`")
    return twin


def init_twin(conn: Connection, name: str, crs: str, vertical_crs: str | None = None) -> Twin:
    """Create the twin with its CRS, or return the existing one if it agrees.

    Pins every geometry column to the twin's SRID so PostGIS enforces it from then on.
    """
    srid = metric_srid(crs)
    existing = get_twin(conn)
    if existing is not None:
        if existing.srid != srid:
            raise ConflictError(
                f"this twin uses EPSG:{existing.srid}; cannot switch to {crs!r} (reproject the input instead)"
            )
        if vertical_crs and not existing.vertical_crs:
            conn.execute(text("UPDATE twin SET vertical_crs = :v, updated_at = now()"), {"v": vertical_crs})
            return Twin(existing.name, existing.crs, existing.srid, vertical_crs)
        return existing
    conn.execute(
        text("INSERT INTO twin (id, name, crs, srid, vertical_crs) VALUES (1, :name, :crs, :srid, :vcrs)"),
        {"name": name, "crs": f"EPSG:{srid}", "srid": srid, "vcrs": vertical_crs},
    )
    for table, column, geom_type in GEOMETRY_COLUMNS:
        conn.execute(text(
            f"ALTER TABLE {table} ALTER COLUMN {column} TYPE geometry({geom_type}, {srid}) "
            f"USING ST_SetSRID({column}, {srid})"
        ))
    return Twin(name, f"EPSG:{srid}", srid, vertical_crs)
