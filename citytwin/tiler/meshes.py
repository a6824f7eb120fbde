"""Building meshes for one tile: LoD1 extrusions and LoD2 solids, triangulated, in a local ENU frame.

All buildings of a tile are processed as one batch of numpy arrays; Python loops only run once per polygon
that needs earcut (concave footprints, holes, LoD2 faces), never per vertex.

LoD1: the footprint (exterior rings counter-clockwise, holes clockwise) is extruded from the ground elevation
``z0`` to ``z0 + height``: a flat roof (a vectorised fan for strictly convex rings, earcut otherwise) and one
quad per ring edge. The floor is not drawn (it is never seen from above ground), which saves a third of the
triangles.

LoD2: each face of the solid is triangulated in its own plane: projected on the coordinate plane most
perpendicular to its Newell normal, triangulated, and its triangles wound to agree with that normal.

Vertices are not shared between faces (flat shading); normals come from the final ENU geometry (the
triangles' own normals), so they are right even where grid north and true north differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import mapbox_earcut as earcut
import numpy as np
import shapely

from citytwin.tiler.frames import EnuFrame, GeoReference, geodetic_to_ecef

UP = np.array([0.0, 0.0, 1.0])


@dataclass
class TileMesh:
    """Triangles of one tile in the tile's ENU frame (x east, y north, z up; metres)."""

    frame: EnuFrame
    positions: np.ndarray  # (n, 3) float32
    normals: np.ndarray  # (n, 3) float32
    feature_ids: np.ndarray  # (n,) int, row of the building in the tile's property table
    indices: np.ndarray  # (3 m,) uint32
    region: list[float]  # [west, south, east, north, min h, max h] radians / metres (EPSG:4979)


@dataclass
class _Part:
    """Vertices in geodetic coordinates plus local triangles, before the tile frame is known."""

    lon: np.ndarray
    lat: np.ndarray
    h: np.ndarray
    feature_ids: np.ndarray
    triangles: np.ndarray  # (m, 3) into this part's vertices


def _open_rings(coords: np.ndarray, ring_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop each ring's closing vertex. Returns kept coords, ring start and ring length (in kept coords)."""
    lengths = np.diff(ring_offsets) - 1
    keep = np.ones(len(coords), dtype=bool)
    keep[ring_offsets[1:] - 1] = False
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else np.zeros(0, dtype=np.int64)
    return coords[keep], starts.astype(np.int64), lengths.astype(np.int64)


def _ring_next(starts: np.ndarray, lengths: np.ndarray, total: int) -> np.ndarray:
    """For every vertex, the index of the next vertex along its (open) ring, wrapping at the ring end."""
    nxt = np.arange(1, total + 1, dtype=np.int64)
    last = starts + lengths - 1
    nxt[last] = starts
    return nxt


def _earcut(points2d: np.ndarray, ring_ends: np.ndarray) -> np.ndarray:
    if len(points2d) < 3:
        return np.zeros((0, 3), dtype=np.int64)
    tris = earcut.triangulate_float64(points2d, ring_ends.astype(np.uint32))
    return tris.astype(np.int64).reshape(-1, 3)


def _convex_single_rings(xy: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                         poly_ring_offsets: np.ndarray) -> np.ndarray:
    """Polygons that are one strictly convex counter-clockwise ring (most footprints): fan-triangulable."""
    n_poly = len(poly_ring_offsets) - 1
    single = np.diff(poly_ring_offsets) == 1
    ring = poly_ring_offsets[:-1]
    if not len(lengths):
        return np.zeros(n_poly, bool)
    ok = single & (lengths[np.minimum(ring, len(lengths) - 1)] >= 3)
    if not ok.any():
        return ok
    total = len(xy)
    nxt = _ring_next(starts, lengths, total)
    nxt2 = nxt[nxt]
    e1 = xy[nxt] - xy
    e2 = xy[nxt2] - xy[nxt]
    turn = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    scale = np.hypot(e1[:, 0], e1[:, 1]) * np.hypot(e2[:, 0], e2[:, 1])
    strictly_left = turn > 1e-9 * np.maximum(scale, 1e-30)
    vert_ring = np.repeat(np.arange(len(lengths)), lengths)
    ring_convex = np.ones(len(lengths), dtype=bool)
    np.logical_and.at(ring_convex, vert_ring, strictly_left)
    return ok & ring_convex[np.minimum(ring, len(lengths) - 1)]


def _triangulate_polygons(xy: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                          poly_ring_offsets: np.ndarray) -> np.ndarray:
    """Triangulate every polygon (rings ``poly_ring_offsets[i]:poly_ring_offsets[i+1]``).

    Returns triangles as global vertex indices.

    Strictly convex single rings get a vectorised fan (v0, vi, vi+1); the rest go through earcut.
    """
    fan = _convex_single_rings(xy, starts, lengths, poly_ring_offsets)
    out = []
    if fan.any():
        ring = poly_ring_offsets[:-1][fan]
        first, count = starts[ring], lengths[ring]
        n_tris = count - 2
        owner = np.repeat(np.arange(len(ring)), n_tris)
        k = np.arange(n_tris.sum()) - np.repeat(np.cumsum(n_tris) - n_tris, n_tris)
        base = first[owner]
        out.append(np.column_stack([base, base + k + 1, base + k + 2]))
    for p in np.flatnonzero(~fan):
        r0, r1 = poly_ring_offsets[p], poly_ring_offsets[p + 1]
        if r1 <= r0 or lengths[r0] < 3:
            continue
        v0 = starts[r0]
        v1 = starts[r1 - 1] + lengths[r1 - 1]
        tris = _earcut(xy[v0:v1], np.cumsum(lengths[r0:r1]))
        if len(tris):
            out.append(tris + v0)
    return np.concatenate(out) if out else np.zeros((0, 3), dtype=np.int64)


def _signed_area2(p: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = p[tris[:, 0]], p[tris[:, 1]], p[tris[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def _wind(tris: np.ndarray, flip: np.ndarray) -> np.ndarray:
    tris = tris.copy()
    tris[flip, 1], tris[flip, 2] = tris[flip, 2], tris[flip, 1].copy()
    return tris


def lod1_part(footprints: np.ndarray, feature_ids: np.ndarray, base: np.ndarray, height: np.ndarray,
              georef: GeoReference) -> _Part | None:
    """Extrude footprints (shapely (Multi)Polygons in the twin CRS) from ``base`` to ``base + height`` (m)."""
    if len(footprints) == 0:
        return None
    polys, owner = shapely.get_parts(footprints, return_index=True)
    polys = shapely.orient_polygons(shapely.remove_repeated_points(polys), exterior_cw=False)
    ok = ~shapely.is_empty(polys)
    polys, owner = polys[ok], owner[ok]
    if len(polys) == 0:
        return None
    _, coords, (ring_offsets, poly_offsets) = shapely.to_ragged_array(polys)
    xy, starts, lengths = _open_rings(coords, ring_offsets)
    # Owner building of every ring and vertex.
    ring_poly = np.repeat(np.arange(len(polys)), np.diff(poly_offsets))
    vert_ring = np.repeat(np.arange(len(lengths)), lengths)
    vert_owner = owner[ring_poly[vert_ring]]
    n = len(xy)
    z0 = base[vert_owner]
    lon, lat, h0 = georef.to_geodetic(xy[:, 0], xy[:, 1], z0)
    h1 = h0 + height[vert_owner]

    roof = _triangulate_polygons(xy, starts, lengths, poly_offsets)
    if len(roof):
        roof = _wind(roof, _signed_area2(xy, roof) < 0)  # counter-clockwise seen from above: normal up

    # Walls: one quad per ring edge a -> b; with exteriors CCW and holes CW the solid lies left of a -> b,
    # so (a_bottom, b_bottom, b_top) is counter-clockwise seen from outside.
    a = np.arange(n)
    b = _ring_next(starts, lengths, n)
    quad_lon = np.stack([lon[a], lon[b], lon[b], lon[a]], axis=1).ravel()
    quad_lat = np.stack([lat[a], lat[b], lat[b], lat[a]], axis=1).ravel()
    quad_h = np.stack([h0[a], h0[b], h1[b], h1[a]], axis=1).ravel()
    q = (np.arange(n) * 4)[:, None]
    walls = np.concatenate([q + [0, 1, 2], q + [0, 2, 3]])

    return _Part(
        lon=np.concatenate([lon, quad_lon]),
        lat=np.concatenate([lat, quad_lat]),
        h=np.concatenate([h1, quad_h]),
        feature_ids=np.concatenate([feature_ids[vert_owner], np.repeat(feature_ids[vert_owner], 4)]),
        triangles=np.concatenate([roof, walls + n]),
    )


_DROP_AXIS_UV = {0: (1, 2), 1: (2, 0), 2: (0, 1)}


def lod2_part(solids: np.ndarray, feature_ids: np.ndarray, georef: GeoReference) -> _Part | None:
    """Triangulate the faces of LoD2 solids (shapely MultiPolygon Z, absolute orthometric heights)."""
    if len(solids) == 0:
        return None
    faces, owner = shapely.get_parts(solids, return_index=True)
    # No shapely.remove_repeated_points here: it compares points in 2D and would collapse vertical walls.
    ok = ~shapely.is_empty(faces)
    faces, owner = faces[ok], owner[ok]
    if len(faces) == 0:
        return None
    _, coords, (ring_offsets, face_offsets) = shapely.to_ragged_array(faces, include_z=True)
    xyz, starts, lengths = _open_rings(coords, ring_offsets)
    n = len(xyz)
    vert_ring = np.repeat(np.arange(len(lengths)), lengths)
    ring_face = np.repeat(np.arange(len(faces)), np.diff(face_offsets))
    vert_face = ring_face[vert_ring]

    # Newell normal of each face's exterior ring: n = sum over edges of (p_i x p_{i+1}).
    nxt = _ring_next(starts, lengths, n)
    exterior = np.zeros(len(lengths), dtype=bool)
    exterior[face_offsets[:-1]] = True
    on_ext = exterior[vert_ring]
    # Coordinates relative to each face's first vertex keep the cross products well conditioned.
    centred = xyz - xyz[starts[face_offsets[:-1]][vert_face]]
    cross = np.cross(centred, centred[nxt])
    normal = np.zeros((len(faces), 3))
    np.add.at(normal, vert_face[on_ext], cross[on_ext])
    drop = np.argmax(np.abs(normal), axis=1)

    tris_all = []
    for f in range(len(faces)):
        r0, r1 = face_offsets[f], face_offsets[f + 1]
        if lengths[r0] < 3:
            continue
        v0 = starts[r0]
        v1 = starts[r1 - 1] + lengths[r1 - 1]
        u, v = _DROP_AXIS_UV[int(drop[f])]
        pts = centred[v0:v1][:, [u, v]]
        tris = _earcut(np.ascontiguousarray(pts), np.cumsum(lengths[r0:r1]))
        if not len(tris):
            continue
        area = _signed_area2(pts, tris)
        tris_all.append(_wind(tris, (area < 0) != (normal[f, drop[f]] < 0)) + v0)
    triangles = np.concatenate(tris_all) if tris_all else np.zeros((0, 3), dtype=np.int64)
    lon, lat, h = georef.to_geodetic(xyz[:, 0], xyz[:, 1], xyz[:, 2])
    return _Part(lon=lon, lat=lat, h=h, feature_ids=feature_ids[owner[vert_face]], triangles=triangles)


def _vertex_normals(pos: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Flat-shading normals: faces own their vertices, so each vertex takes its triangles' (common) normal.

    Degenerate triangles are written first so that any proper triangle of the same vertex overwrites them;
    vertices on degenerate triangles only get "up" (any unit vector keeps the accessor valid).
    """
    a, b, c = pos[tris[:, 0]], pos[tris[:, 1]], pos[tris[:, 2]]
    face = np.cross(b - a, c - a)
    length = np.linalg.norm(face, axis=1)
    good = length > 1e-12
    face[good] /= length[good, None]
    face[~good] = UP
    order = np.argsort(good, kind="stable")  # degenerate (False) first
    out = np.empty_like(pos)
    out[:] = UP
    for k in range(3):
        out[tris[order, k]] = face[order]
    return out


def assemble(parts: list[_Part | None]) -> TileMesh | None:
    """Put the parts of one tile in an ENU frame centred on the tile and build normals and indices."""
    parts = [p for p in parts if p is not None and len(p.triangles)]
    if not parts:
        return None
    lon = np.concatenate([p.lon for p in parts])
    lat = np.concatenate([p.lat for p in parts])
    h = np.concatenate([p.h for p in parts])
    ids = np.concatenate([p.feature_ids for p in parts])
    offsets = np.cumsum([0] + [len(p.lon) for p in parts])
    tris = np.concatenate([p.triangles + off for p, off in zip(parts, offsets)])

    west, east, south, north = lon.min(), lon.max(), lat.min(), lat.max()
    frame = EnuFrame.at((west + east) / 2.0, (south + north) / 2.0, float(h.min()))
    enu = frame.from_ecef(geodetic_to_ecef(lon, lat, h))
    normals = _vertex_normals(enu, tris)
    # Margins (1e-8 rad ~ 6 cm, 5 cm) keep the stored vertices inside the region after quantization (half a
    # step: extent / 131068, 1.5 cm for a 2 km tile).
    pad = 1e-8
    region = [float(np.radians(west)) - pad, float(np.radians(south)) - pad, float(np.radians(east)) + pad,
              float(np.radians(north)) + pad, float(h.min()) - 0.05, float(h.max()) + 0.05]
    return TileMesh(
        frame=frame,
        positions=enu.astype(np.float32),
        normals=normals.astype(np.float32),
        feature_ids=ids,
        indices=tris.astype(np.uint32).ravel(),
        region=region,
    )
