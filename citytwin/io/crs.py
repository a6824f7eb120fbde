"""CRS handling for the readers: parsing user and file CRS strings, splitting compound CRSs,
choosing a metric CRS for a new twin, reprojecting building frames, and one known file quirk.

Every CRS leaves this module as a short string (``"EPSG:28992"``) when it has an EPSG code, so the
loader can use it as a PostGIS SRID; a CRS without one is passed on as WKT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from citytwin.errors import InputError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import geopandas as gpd
    from pyproj import CRS

# UTM zones: EPSG 326zz (north) and 327zz (south), zz = 1..60, WGS 84 datum.
UTM_NORTH_BASE = 32600
UTM_SOUTH_BASE = 32700
UTM_FALSE_NORTHING_SOUTH = 10_000_000.0  # m, false northing of every southern UTM zone


def parse_crs(value: object, *, what: str = "CRS") -> "CRS":
    """A ``pyproj.CRS`` from anything pyproj accepts (``EPSG:n``, URN, OGC URL, WKT, PROJJSON).

    Raises
    ------
    InputError
        If the value is empty or pyproj does not know it; the message names ``what`` (e.g. the file).
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{what}: empty CRS")
    if isinstance(value, int):
        value = f"EPSG:{value}"
    try:
        if isinstance(value, dict):  # PROJJSON, e.g. from GeoParquet metadata
            return CRS.from_json_dict(value)
        return CRS.from_user_input(value)
    except (CRSError, TypeError, ValueError) as exc:
        raise InputError(f"{what}: unknown CRS {value!r} ({exc})") from exc


def crs_string(crs: "CRS") -> str:
    """``"EPSG:n"`` when the CRS has an EPSG code (exact or with high confidence), else its WKT."""
    epsg = crs.to_epsg()
    if epsg is None and crs.to_authority() == ("OGC", "CRS84"):
        return "EPSG:4326"  # same datum; geopandas and the twin always use lon/lat order for it
    if epsg is None:
        # ESRI .prj files and GeoTIFF keys often lack the authority; 70 % is pyproj's own default
        # confidence for a match that differs only in names.
        epsg = crs.to_epsg(min_confidence=70)
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def split_compound(crs: "CRS") -> tuple[str, str | None]:
    """The horizontal and vertical parts of a CRS as strings.

    A compound CRS (EPSG:7415 = RD New EPSG:28992 + NAP height EPSG:5709) is split into its
    components; a 3D geographic/projected CRS is reduced to 2D with no vertical part; anything
    else is returned as is with ``None`` for the vertical part.
    """
    if crs.is_compound:
        horizontal = next((sub for sub in crs.sub_crs_list if not sub.is_vertical), None)
        vertical = next((sub for sub in crs.sub_crs_list if sub.is_vertical), None)
        if horizontal is None:
            raise InputError(f"compound CRS {crs_string(crs)} has no horizontal component")
        return crs_string(horizontal), crs_string(vertical) if vertical is not None else None
    if crs.is_vertical:
        raise InputError(f"{crs_string(crs)} is a vertical CRS; the data need a horizontal CRS")
    if len(crs.axis_info) == 3:
        return crs_string(crs.to_2d()), None
    return crs_string(crs), None


def resolve_crs(file_crs: object | None, user_crs: str | None, *, what: str) -> tuple[str, str | None]:
    """Combine the CRS a file declares with the ``--crs`` the user gave.

    Rules: the file's CRS wins when the user gave none; the user's CRS is used when the file has
    none; when both exist they must agree horizontally (``EPSG:28992`` agrees with ``EPSG:7415``),
    otherwise the call fails rather than silently relabelling coordinates. The user's vertical
    part fills a missing vertical part of the file.

    Returns
    -------
    (horizontal, vertical)
        CRS strings; ``vertical`` is ``None`` when neither side knows the height datum.
    """
    user = parse_crs(user_crs, what=f"{what}: --crs") if user_crs is not None else None
    if file_crs is None:
        if user is None:
            raise InputError(f"{what}: no CRS in file; pass --crs EPSG:n")
        return split_compound(user)
    declared = file_crs if not isinstance(file_crs, (str, int, dict)) else parse_crs(file_crs, what=what)
    horizontal, vertical = split_compound(declared)
    if user is not None:
        user_h, user_v = split_compound(user)
        if not _same_crs(user_h, horizontal):
            raise InputError(f"{what}: the file declares {horizontal} but --crs {user_crs} was given; "
                             "omit --crs or reproject the file (the reader never relabels coordinates)")
        vertical = vertical or user_v
    return horizontal, vertical


def _same_crs(a: str, b: str) -> bool:
    from pyproj import CRS

    if a == b:
        return True
    return CRS.from_user_input(a).equals(CRS.from_user_input(b), ignore_axis_order=True)


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 UTM zone holding (lon, lat), degrees.

    Zone = floor((lon + 180) / 6) + 1, with the two exceptions of the UTM grid: zone 32V is widened
    to 3-12 E over south-west Norway (56-64 N) and Svalbard (72-84 N) uses zones 31, 33, 35, 37
    (Snyder 1987, "Map projections - a working manual", USGS PP 1395, p. 62).
    """
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise InputError(f"({lon}, {lat}) is not a longitude/latitude in degrees")
    zone = int((lon + 180.0) // 6.0) + 1
    zone = min(zone, 60)
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32
    if 72.0 <= lat < 84.0 and 0.0 <= lon < 42.0:
        zone = 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return (UTM_NORTH_BASE if lat >= 0 else UTM_SOUTH_BASE) + zone


def choose_metric_crs(frame: "gpd.GeoDataFrame") -> str:
    """A metric CRS for a new twin: the UTM zone (``"EPSG:326zz"``/``"EPSG:327zz"``) at the centre
    of the frame's bounding box.

    UTM keeps the scale error below 0.04 % inside a zone (k0 = 0.9996 on the central meridian),
    small against the footprint accuracy of any building dataset.
    """
    from pyproj import Transformer

    if frame.crs is None:
        raise InputError("cannot choose a metric CRS for data without a CRS; pass --crs EPSG:n")
    if frame.empty:
        raise InputError("cannot choose a metric CRS for an empty frame")
    xmin, ymin, xmax, ymax = frame.total_bounds
    cx, cy = (xmin + xmax) / 2.0, (ymin + ymax) / 2.0
    if not frame.crs.is_geographic:
        cx, cy = Transformer.from_crs(frame.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
    return f"EPSG:{utm_epsg(float(cx), float(cy))}"


def to_crs(frame: "gpd.GeoDataFrame", crs: str) -> "gpd.GeoDataFrame":
    """Reproject a building frame, including the ``lod2`` column that geopandas does not know.

    The LoD2 faces are transformed in x/y with the horizontal transformation; their z values are
    kept as they are (heights stay in the file's vertical datum, which only a geoid model could
    change, and a horizontal reprojection leaves orthometric heights unchanged).
    """
    import shapely
    from pyproj import Transformer

    if frame.crs is None:
        raise InputError("cannot reproject buildings without a CRS; pass --crs EPSG:n")
    target = parse_crs(crs, what="target CRS")
    out = frame.to_crs(target)
    if "lod2" in out.columns and out["lod2"].notna().any():
        transformer = Transformer.from_crs(frame.crs, target, always_xy=True)

        def move(coords: np.ndarray) -> np.ndarray:
            x, y = transformer.transform(coords[:, 0], coords[:, 1])
            return np.column_stack([x, y, coords[:, 2]])

        values = np.asarray(out["lod2"].to_numpy(), dtype=object)
        present = np.array([g is not None for g in values])
        moved = values.copy()
        moved[present] = shapely.transform(values[present], move, include_z=True)
        out["lod2"] = moved
    return out


def fix_false_northing(crs: "CRS", ymin: float) -> tuple[str, float, str] | None:
    """Detect northern-hemisphere data written in a southern UTM zone and say how to fix it.

    A southern UTM zone adds a false northing of 10,000,000 m, so its valid northings lie below
    10,000,000 m. Northings above that value mean points north of the equator: the CEA reference
    case (Zug, ``zone.shp``) is written in "WGS_1984_UTM_Zone_32S" with northings ~15.22e6. The
    transverse Mercator formulas are identical in both zones apart from the false northing, so
    ``N_north = N_south - 10,000,000`` in zone 32N (EPSG:32632) is the same point, exactly; the
    reader subtracts the offset and labels the data with the northern zone.

    Returns
    -------
    (northern CRS string, y offset to add in metres, warning) or None when nothing is wrong.
    """
    epsg = crs.to_epsg(min_confidence=70)
    if epsg is None or not (UTM_SOUTH_BASE + 1 <= epsg <= UTM_SOUTH_BASE + 60):
        return None
    if not ymin > UTM_FALSE_NORTHING_SOUTH:
        return None
    north = epsg - UTM_SOUTH_BASE + UTM_NORTH_BASE
    warning = (f"the file declares EPSG:{epsg} (UTM south) but all northings exceed 10,000,000 m, i.e. the "
               f"buildings are north of the equator; read as EPSG:{north} with y - 10,000,000 m "
               "(the same positions)")
    return f"EPSG:{north}", -UTM_FALSE_NORTHING_SOUTH, warning
