"""Footprint validation for the readers: ``repair_footprints`` with the common case answered early.

Almost every footprint in real and synthetic data is a simple, valid, counter-clockwise polygon.
For those, ``citytwin.io.geometry.repair_footprints`` accepts the geometry as it is and its
orientation pass (``shapely.orient_polygons``) returns the same coordinates -- yet that pass alone
costs about as much as reading the file. ``screen_footprints`` recognises them in a few vectorised
passes (type, holes, validity, area, signed area) and hands only the rest to ``repair_footprints``,
so the outcome per row is the same as calling ``repair_footprints`` on everything.
"""

from __future__ import annotations

import numpy as np
import shapely

from citytwin.io.geometry import POLYGON, Repaired, planar_area_m2, repair_footprints

MIN_AREA = 1.0  # m²; passed to repair_footprints too, so both paths apply the same threshold


def screen_footprints(geoms: np.ndarray, *, geographic: bool = False) -> Repaired:
    """Validate and repair footprints as ``repair_footprints`` does, skipping it for plain good ones.

    A row is accepted here, unchanged, when it is a 2D Polygon without holes that GEOS finds valid,
    whose area is at least ``MIN_AREA`` and whose ring is counter-clockwise: exactly the rows for
    which ``repair_footprints`` would return an equal geometry, no reason and no repair flag.
    """
    geoms = np.asarray(geoms, dtype=object)
    good = _plain_good(geoms, geographic)
    if good.all():
        return Repaired(geometry=geoms.copy(), reason=np.full(len(geoms), None, dtype=object),
                        repaired=np.zeros(len(geoms), dtype=bool))
    rest = np.flatnonzero(~good)
    checked = repair_footprints(geoms[rest], min_area=MIN_AREA, geographic=geographic)
    geometry = geoms.copy()
    reason = np.full(len(geoms), None, dtype=object)
    repaired = np.zeros(len(geoms), dtype=bool)
    geometry[rest], reason[rest], repaired[rest] = checked.geometry, checked.reason, checked.repaired
    return Repaired(geometry=geometry, reason=reason, repaired=repaired)


def _plain_good(geoms: np.ndarray, geographic: bool) -> np.ndarray:
    """Rows that are non-empty, valid, hole-free, counter-clockwise 2D polygons of at least ``MIN_AREA``
    (emptiness first: the geographic area needs a centroid, which an empty polygon lacks)."""
    tests = (
        lambda g: shapely.get_type_id(g) == POLYGON,
        lambda g: ~shapely.is_empty(g) & ~shapely.has_z(g),
        lambda g: shapely.get_num_interior_rings(g) == 0,
        shapely.is_valid,
        lambda g: planar_area_m2(g, geographic) >= MIN_AREA,
        _counter_clockwise,
    )
    good = ~shapely.is_missing(geoms)
    for test in tests:
        index = np.flatnonzero(good)  # each test only on the rows that passed the previous ones
        good[index] = test(geoms[index])
    return good


def _counter_clockwise(polygons: np.ndarray) -> np.ndarray:
    """Whether the exterior ring of each hole-free polygon runs counter-clockwise (positive shoelace
    area). Coordinates are taken relative to each ring's first vertex so that large eastings or
    northings do not swamp the sum of cross products in rounding error."""
    if not len(polygons):
        return np.zeros(0, dtype=bool)
    xy = shapely.get_coordinates(polygons)
    counts = shapely.get_num_coordinates(polygons)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    xy = xy - np.repeat(xy[starts], counts, axis=0)
    cross = np.zeros(len(xy))
    cross[:-1] = xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1]
    cross[starts + counts - 1] = 0.0  # the closing vertex pairs with the next ring's first: not an edge
    return np.add.reduceat(cross, starts) > 0
