"""Validation and safe repair of building footprints, vectorised over shapely 2 arrays.

A footprint is accepted when it is a non-empty, valid 2D Polygon or MultiPolygon of at least
``min_area``. An invalid one is repaired with ``shapely.make_valid(method="structure")`` (GEOS
MakeValid: rings are noded and the area they enclose is rebuilt, lines and points from collapsed
parts are dropped) and the polygonal part is kept *only if* the repair changes the area by less
than ``max_area_change`` (1 % by default): a ring with a small twist at one corner is a digitising
slip and is fixed, while a figure-eight whose two lobes cancel (signed area near zero) is
ambiguous and rejected with the reason GEOS gives. Ring orientation is normalised (exterior
counter-clockwise, holes clockwise, as RFC 7946 asks) with ``shapely.orient_polygons``; GEOS does
not count orientation as invalid, so no ``buffer(0)`` pass is needed for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import shapely

POLYGON = int(shapely.GeometryType.POLYGON)
MULTIPOLYGON = int(shapely.GeometryType.MULTIPOLYGON)
COLLECTION = int(shapely.GeometryType.GEOMETRYCOLLECTION)
_TYPE_NAMES = {0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon", 4: "MultiPoint",
               5: "MultiLineString", 6: "MultiPolygon", 7: "GeometryCollection"}

METRES_PER_DEGREE = 111_320.0  # m per degree of latitude (and of longitude at the equator), WGS 84 mean


@dataclass
class Repaired:
    """Outcome per input row: the accepted geometry (None if rejected), the rejection reason
    (None if accepted) and whether a repair was applied."""

    geometry: np.ndarray
    reason: np.ndarray
    repaired: np.ndarray

    @property
    def accepted(self) -> np.ndarray:
        return np.array([r is None for r in self.reason], dtype=bool)


def _polygonal_part(geoms: np.ndarray) -> np.ndarray:
    """The polygonal content of each geometry (collections keep only their polygons), or None."""
    out = np.empty(len(geoms), dtype=object)
    types = shapely.get_type_id(geoms)
    direct = (types == POLYGON) | (types == MULTIPOLYGON)
    out[direct] = geoms[direct]
    for i in np.flatnonzero(types == COLLECTION):  # rare: only after make_valid or in odd files
        parts = shapely.get_parts(geoms[i])
        parts = parts[np.isin(shapely.get_type_id(parts), (POLYGON, MULTIPOLYGON))]
        out[i] = shapely.union_all(parts) if len(parts) else None
    return out


def _invalid_reason(geoms: np.ndarray) -> np.ndarray:
    """GEOS's reason without the coordinates (``"Self-intersection[5 5]"`` -> ``"self-intersection"``)."""
    reasons = shapely.is_valid_reason(geoms)
    return np.array([re.sub(r"\[.*\]$", "", r).strip().lower() for r in reasons], dtype=object)


def planar_area_m2(geoms: np.ndarray, geographic: bool) -> np.ndarray:
    """Area in m²; for lon/lat degrees scaled by (111 320 m/°)² cos(latitude) at the centroid,
    accurate to well under 1 % at building size (used only for the minimum-area test)."""
    area = shapely.area(geoms)
    if geographic:
        lat = shapely.get_y(shapely.centroid(geoms))
        area = area * METRES_PER_DEGREE**2 * np.cos(np.radians(lat))
    return area


def repair_footprints(geoms: np.ndarray, *, max_area_change: float = 0.01, min_area: float = 1.0,
                      geographic: bool = False) -> Repaired:
    """Validate and, where safe, repair footprints.

    Parameters
    ----------
    geoms
        Shapely geometries (object array); ``None`` for missing ones. Z is dropped.
    max_area_change
        Largest accepted relative area change of a repair, |A_repaired - A| / max(A_repaired, A).
    min_area
        Smallest accepted footprint area, m².
    geographic
        True when coordinates are lon/lat degrees (areas are then converted to m²).

    Returns
    -------
    Repaired
        Reasons are short phrases: ``"missing geometry"``, ``"empty geometry"``,
        ``"non-polygon type (LineString)"``, ``"invalid geometry: self-intersection; repair would
        change the area by 100.0 %"``, ``"too small (0.40 m²)"``.
    """
    geoms = np.asarray(geoms, dtype=object)
    n = len(geoms)
    reason = np.full(n, None, dtype=object)
    repaired = np.zeros(n, dtype=bool)
    out = np.full(n, None, dtype=object)

    missing = shapely.is_missing(geoms)
    reason[missing] = "missing geometry"
    present = ~missing
    types = np.full(n, -1)
    types[present] = shapely.get_type_id(geoms[present])
    polygonal = (types == POLYGON) | (types == MULTIPOLYGON) | (types == COLLECTION)
    for i in np.flatnonzero(present & ~polygonal):
        reason[i] = f"non-polygon type ({_TYPE_NAMES.get(int(types[i]), 'unknown')})"
    work = np.flatnonzero(present & polygonal)
    candidate = geoms[work]
    if shapely.has_z(candidate).any():
        candidate = shapely.force_2d(candidate)
    candidate = _polygonal_part(candidate)
    no_polygon = shapely.is_missing(candidate)
    reason[work[no_polygon]] = "non-polygon type (GeometryCollection without polygons)"
    work, candidate = work[~no_polygon], candidate[~no_polygon]

    empty = shapely.is_empty(candidate)
    reason[work[empty]] = "empty geometry"
    work, candidate = work[~empty], candidate[~empty]

    valid = shapely.is_valid(candidate)
    bad = np.flatnonzero(~valid)
    if len(bad):
        original = candidate[bad]
        why = _invalid_reason(original)
        fixed = _polygonal_part(shapely.make_valid(original, method="structure", keep_collapsed=False))
        before = shapely.area(original)
        after = np.nan_to_num(shapely.area(fixed))  # area(None) is NaN: nothing left
        scale = np.maximum(np.maximum(before, after), np.finfo(float).tiny)
        change = np.abs(after - before) / scale
        ok = (after > 0) & (change < max_area_change)
        for j in np.flatnonzero(~ok):
            if after[j] == 0 and before[j] == 0:
                reason[work[bad[j]]] = f"invalid geometry: {why[j]}; no area left after repair"
            else:
                reason[work[bad[j]]] = (f"invalid geometry: {why[j]}; repair would change the area by "
                                        f"{100 * change[j]:.1f} %")
        candidate[bad[ok]] = fixed[ok]
        repaired[work[bad[ok]]] = True
        keep = np.ones(len(work), dtype=bool)
        keep[bad[~ok]] = False
        work, candidate = work[keep], candidate[keep]

    area = planar_area_m2(candidate, geographic)
    small = area < min_area
    for j in np.flatnonzero(small):
        reason[work[j]] = f"too small ({area[j]:.2f} m²)"
    work, candidate = work[~small], candidate[~small]

    out[work] = shapely.orient_polygons(candidate, exterior_cw=False)
    return Repaired(geometry=out, reason=reason, repaired=repaired)
