"""CityJSON (0.2-2.0) and CityJSONSeq buildings -> ``BuildingRead``.

What is read
------------
- ``Building`` objects; their ``BuildingPart`` descendants (linked by ``children`` or by
  ``parents``/``parent``) are merged into them: footprint = union of the parts' footprints, ground =
  lowest ground, roof = highest roof. Other city objects (terrain, roads, installations) are ignored.
- Per object the geometries of the highest LoD (ties: all of them) give footprint and heights; the
  highest LoD 2.x geometry also gives ``lod2``: the outer-shell faces (MultiSurface/CompositeSurface
  faces, the exterior shell of each Solid) as one MultiPolygon Z with absolute z.
- Footprint: 2D union of the ``GroundSurface`` faces; without ground semantics, the union of the
  2D projections of all non-vertical faces (for a closed solid that is its vertical projection).
- Ground elevation: a ground attribute when there is one (``TerrainHeight``, ``b3_h_maaiveld``),
  else the lowest z of the ground faces, else of the whole geometry. Height above ground:
  ``measuredHeight`` when present (it is the height the data producer measured), else highest z
  minus ground. ``roof_max``/``roof_min`` (absolute z of the highest and lowest ``RoofSurface``
  vertex, i.e. ridge and eaves; the geometry's top when there are no roof semantics) and the chosen
  ``lod`` go into ``attributes``; a merged building keeps its parts' attributes under ``parts``.
- Vertices are decoded as ``v * transform.scale + transform.translate`` when a transform exists.

Versions
--------
1.0, 1.1 and 2.0 are read as specified. Older files are upgraded in memory, which is possible
because the building structure changed little: ``"version"`` may be a URL
(``http://www.cityjson.org/version/0.2``), the root type ``"CityModel"``, the CRS
``metadata.crs.epsg``, a part may point at its building with ``"parent"`` and semantics may be one
object per surface instead of ``surfaces``/``values``. Rotterdam's 0.2 file labels every surface a
WallSurface, so its footprints come from the projection rule above. Versions above 2.x are refused.

CRS: ``metadata.referenceSystem`` (OGC URL or URN) or ``metadata.crs.epsg``; EPSG:7415 (RD New +
NAP) becomes ``crs="EPSG:28992"``, ``vertical_crs="EPSG:5709"``. A file without one needs ``crs=``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import shapely

from citytwin.errors import InputError
from citytwin.io.buildings import BuildingRead, ReadContext, assemble, concat_reads, detect_fields
from citytwin.io.uses import DEFAULT_USE

BUILDING, PART = "Building", "BuildingPart"
SUPPORTED = ((0, 2), (2, 99))  # inclusive range of (major, minor) versions
GAP_CLOSING = 0.01  # m: half the widest gap between parts of one building that is closed
_SURFACE_TYPES = ("MultiSurface", "CompositeSurface")
_SOLID_TYPES = ("Solid",)
_MULTI_SOLID_TYPES = ("MultiSolid", "CompositeSolid")


def read_cityjson(path: str | Path, crs: str | None = None, *, height_attr: str | None = None,
                  default_use: str = DEFAULT_USE) -> BuildingRead:
    """All buildings of a CityJSON file (or CityJSONSeq, ``.jsonl``) as one ``BuildingRead``.

    Parameters
    ----------
    path
        The file.
    crs
        CRS when the file declares none (Den Haag's 0.8 tile: ``"EPSG:7415"``); must agree with a
        declared one.
    height_attr
        Attribute holding the height above ground in metres (instead of ``measuredHeight``/geometry).
    default_use
        Use for buildings whose use is unknown.
    """
    reads = list(iter_cityjson_chunks(path, None, crs=crs, height_attr=height_attr, default_use=default_use))
    return concat_reads(reads, source=Path(path).stem)


def iter_cityjson_chunks(path: str | Path, chunk_size: int | None = 100_000, *, crs: str | None = None,
                         height_attr: str | None = None,
                         default_use: str = DEFAULT_USE) -> Iterator[BuildingRead]:
    """Buildings in chunks of at most ``chunk_size`` (CityJSONSeq is streamed line by line; a plain
    CityJSON file is one JSON document and is parsed whole, then chunked)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl" or _is_sequence(path):
        return _sequence_chunks(path, chunk_size, crs=crs, height_attr=height_attr, default_use=default_use)
    doc = _load(path)
    version = check_version(doc, path)
    ctx_crs = _crs_of(doc, crs, path)
    buildings = _collect(path, doc["CityObjects"], _vertices(doc, doc.get("transform"), path))
    if not buildings.ids:
        kinds = sorted({str(o.get("type")) for o in doc["CityObjects"].values() if isinstance(o, dict)})
        raise InputError(f"{path}: no Building objects in the file (found: {', '.join(kinds) or 'nothing'})")
    ctx = _context(path, ctx_crs, buildings, height_attr, default_use)
    if version < (1, 0):
        ctx.warnings.append(f"CityJSON {'.'.join(map(str, version))} upgraded in memory to the 1.x structure")
    return _chunks(buildings, ctx, chunk_size, _grid_size(doc.get("transform")))


def _load(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            doc = json.load(handle)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                         "the file is corrupt or truncated") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a text (UTF-8) file") from exc
    if not isinstance(doc, dict) or doc.get("type") not in ("CityJSON", "CityModel") \
            or "CityObjects" not in doc:
        raise InputError(f"{path}: not a CityJSON file (no 'type': 'CityJSON' with 'CityObjects')")
    if not isinstance(doc["CityObjects"], dict) or not isinstance(doc.get("vertices", []), list):
        raise InputError(f"{path}: malformed CityJSON ('CityObjects' must be an object, 'vertices' a list)")
    return doc


def check_version(doc: dict, path: Path) -> tuple[int, int]:
    """(major, minor) of the file; versions outside ``SUPPORTED`` raise with the cjio hint."""
    raw = str(doc.get("version", ""))
    match = re.search(r"(\d+)\.(\d+)", raw)
    if not match:
        raise InputError(f"{path}: CityJSON without a readable 'version' ({raw!r})")
    version = (int(match[1]), int(match[2]))
    if not SUPPORTED[0] <= version <= SUPPORTED[1]:
        raise InputError(f"{path}: CityJSON version {raw} is not supported (0.2-2.x); "
                         "convert it with `cjio FILE upgrade save NEW.city.json`")
    return version


def _crs_of(doc: dict, user_crs: str | None, path: Path) -> tuple[str, str | None]:
    from citytwin.io.crs import resolve_crs

    metadata = doc.get("metadata") or {}
    declared = metadata.get("referenceSystem")
    if declared is None and isinstance(metadata.get("crs"), dict):  # CityJSON < 0.6
        declared = metadata["crs"].get("epsg")
    return resolve_crs(declared, user_crs, what=str(path))


def _vertices(doc: dict, transform: dict | None, path: Path) -> np.ndarray:
    try:
        vertices = np.asarray(doc.get("vertices", []), dtype=np.float64).reshape(-1, 3)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{path}: 'vertices' must be a list of [x, y, z] numbers ({exc})") from exc
    if transform:
        vertices = vertices * np.asarray(transform["scale"], dtype=float) + np.asarray(transform["translate"],
                                                                                      dtype=float)
    return vertices


def _grid_size(transform: dict | None) -> float | None:
    """Precision grid for unions: the file's own quantisation step (e.g. 1 mm), or none."""
    if not transform:
        return None
    return float(min(transform["scale"][:2]))


@dataclass
class Collected:
    """Faces of all buildings, flattened: ring vertex indices and per-face bookkeeping."""

    ids: list[str] = field(default_factory=list)
    attributes: list[dict] = field(default_factory=list)
    parts: list[dict] = field(default_factory=list)
    lods: list[str | None] = field(default_factory=list)
    ring_vertices: list[int] = field(default_factory=list)  # closed rings, concatenated
    ring_ends: list[int] = field(default_factory=list)
    face_ring_ends: list[int] = field(default_factory=list)
    face_building: list[int] = field(default_factory=list)
    face_semantic: list[str | None] = field(default_factory=list)
    face_top: list[bool] = field(default_factory=list)  # in the highest-LoD geometry
    face_lod2: list[bool] = field(default_factory=list)  # an outer face of the LoD2 geometry
    vertex_blocks: list[np.ndarray] = field(default_factory=list)  # one per document/feature
    vertex_count: int = 0
    orphans: int = 0  # BuildingParts whose Building is missing, read as buildings

    @property
    def vertices(self) -> np.ndarray:
        if len(self.vertex_blocks) > 1:
            self.vertex_blocks = [np.concatenate(self.vertex_blocks)]
        return self.vertex_blocks[0] if self.vertex_blocks else np.empty((0, 3))


def collect_buildings(objects: dict, vertices: np.ndarray, into: Collected | None = None) -> Collected:
    """Resolve parts to their buildings and flatten the faces of every building."""
    out = into if into is not None else Collected()
    base = out.vertex_count
    out.vertex_blocks.append(vertices)
    out.vertex_count += len(vertices)
    root_of = _roots(objects)
    slot: dict[str, int] = {}
    for oid, obj in objects.items():
        if not isinstance(obj, dict) or obj.get("type") not in (BUILDING, PART) or root_of.get(oid, oid) != oid:
            continue
        if obj.get("type") == PART:
            out.orphans += 1
        slot[oid] = len(out.ids)
        out.ids.append(str(oid))
        out.attributes.append(dict(obj.get("attributes") or {}))
        out.parts.append({})
        out.lods.append(None)
    for oid, obj in objects.items():
        if not isinstance(obj, dict) or obj.get("type") not in (BUILDING, PART):
            continue
        root = root_of.get(oid, oid)
        b = slot[root]
        if oid != root:
            out.parts[b][str(oid)] = dict(obj.get("attributes") or {})
        top_lod, lod2_lod = _chosen_lods(obj.get("geometry") or [])
        if top_lod is not None:
            current = out.lods[b]
            out.lods[b] = top_lod if current is None or float(top_lod) > float(current) else current
        for geometry in obj.get("geometry") or []:
            lod = str(geometry.get("lod"))
            top, lod2 = lod == top_lod, lod == lod2_lod
            if top or lod2:
                _add_faces(out, b, geometry, base, top, lod2)
    return out


def _collect(path: Path, objects: dict, vertices: np.ndarray, into: Collected | None = None) -> Collected:
    try:
        return collect_buildings(objects, vertices, into)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # boundaries not nested as specified
        raise InputError(f"{path}: malformed CityJSON geometry ({type(exc).__name__}: {exc})") from exc


def _roots(objects: dict) -> dict[str, str]:
    """For each object, its top-most Building/BuildingPart ancestor (parts of parts resolve to the
    building; a part whose parent is missing is its own root)."""
    parent: dict[str, str] = {}
    for oid, obj in objects.items():
        if not isinstance(obj, dict):
            continue
        for child in obj.get("children") or []:
            parent.setdefault(str(child), str(oid))
        up = obj.get("parents") or ([obj["parent"]] if obj.get("parent") else [])
        if up:
            parent.setdefault(str(oid), str(up[0]))
    def is_building(oid: str) -> bool:
        obj = objects.get(oid)
        return isinstance(obj, dict) and obj.get("type") in (BUILDING, PART)

    roots = {}
    for oid in objects:
        node, seen = str(oid), set()
        while node in parent and node not in seen and is_building(parent[node]):
            seen.add(node)
            node = parent[node]
        roots[str(oid)] = node
    return roots


def _chosen_lods(geometries: list) -> tuple[str | None, str | None]:
    """The highest LoD overall and the highest LoD 2.x (as the strings used in the file)."""
    lods = []
    for g in geometries:
        if isinstance(g, dict) and g.get("type") in (*_SURFACE_TYPES, *_SOLID_TYPES, *_MULTI_SOLID_TYPES):
            try:
                lods.append((float(g.get("lod")), str(g.get("lod"))))
            except (TypeError, ValueError):
                continue
    if not lods:
        return None, None
    top = max(lods)[1]
    lod2 = [item for item in lods if 2.0 <= item[0] < 3.0]
    return top, (max(lod2)[1] if lod2 else None)


def _semantic_tree(semantics: object) -> object:
    """Semantic surface types nested like the boundaries (1.x ``values`` or the pre-0.6 list form)."""
    if isinstance(semantics, dict) and "surfaces" in semantics:
        names = [s.get("type") if isinstance(s, dict) else None for s in semantics.get("surfaces") or []]

        def convert(value: object) -> object:
            if isinstance(value, list):
                return [convert(v) for v in value]
            return names[value] if isinstance(value, int) and 0 <= value < len(names) else None

        return convert(semantics.get("values"))
    if isinstance(semantics, list):
        def convert_old(value: object) -> object:
            if isinstance(value, list):
                return [convert_old(v) for v in value]
            return value.get("type") if isinstance(value, dict) else None

        return convert_old(semantics)
    return None


def _at(tree: object, *index: int) -> object:
    for i in index:
        if not isinstance(tree, list) or i >= len(tree):
            return None
        tree = tree[i]
    return tree


def _add_faces(out: Collected, building: int, geometry: dict, base: int, top: bool, lod2: bool) -> None:
    kind = geometry.get("type")
    boundaries = geometry.get("boundaries") or []
    tree = _semantic_tree(geometry.get("semantics"))
    shells: list[tuple[list, object, bool]] = []  # (surfaces, semantic subtree, is an outer shell)
    if kind in _SURFACE_TYPES:
        shells.append((boundaries, tree, True))
    elif kind in _SOLID_TYPES:
        shells += [(shell, _at(tree, s), s == 0) for s, shell in enumerate(boundaries)]
    elif kind in _MULTI_SOLID_TYPES:
        shells += [(shell, _at(tree, k, s), s == 0) for k, solid in enumerate(boundaries)
                   for s, shell in enumerate(solid)]
    for surfaces, sem, outer in shells:
        for f, surface in enumerate(surfaces):
            if not surface or not isinstance(surface[0], list) or len(surface[0]) < 3:
                continue  # a face whose exterior ring is degenerate has no area
            holes = [ring for ring in surface[1:] if isinstance(ring, list) and len(ring) >= 3]
            for ring in [surface[0], *holes]:
                out.ring_vertices.extend(base + int(v) for v in ring)
                out.ring_vertices.append(base + int(ring[0]))  # CityJSON rings are implicitly closed
                out.ring_ends.append(len(out.ring_vertices))
            out.face_ring_ends.append(len(out.ring_ends))
            out.face_building.append(building)
            semantic = _at(sem, f)
            out.face_semantic.append(semantic if isinstance(semantic, str) else None)
            out.face_top.append(top)
            out.face_lod2.append(lod2 and outer)


def _context(path: Path, crs: tuple[str, str | None], buildings: Collected, height_attr: str | None,
             default_use: str) -> ReadContext:
    from citytwin.io.crs import parse_crs

    columns = sorted({k for a in buildings.attributes for k in a} | {k for p in buildings.parts
                                                                     for a in p.values() for k in a})
    fields = detect_fields(columns, height_attr=height_attr, what=str(path))
    ctx = ReadContext(path=path, source=path.name.split(".")[0], crs=crs[0], vertical_crs=crs[1],
                      fields=fields, default_use=default_use, geographic=parse_crs(crs[0]).is_geographic)
    if buildings.orphans:
        ctx.warnings.append(f"{buildings.orphans} BuildingParts without their Building read as buildings")
    return ctx


def _chunks(buildings: Collected, ctx: ReadContext, chunk_size: int | None,
            grid_size: float | None) -> Iterator[BuildingRead]:
    try:
        derived = derive(buildings, grid_size, close_gaps=0.0 if ctx.geographic else GAP_CLOSING)
    except InputError as exc:
        raise InputError(f"{ctx.path}: {exc.message}") from exc
    n = len(buildings.ids)
    step = chunk_size or max(n, 1)
    table = _attribute_table(buildings)
    for start in range(0, n, step):
        stop = min(start + step, n)
        extra = [{**{k: v for k, v in d.items() if v is not None},
                  **({"parts": buildings.parts[i]} if buildings.parts[i] else {})}
                 for i, d in zip(range(start, stop), derived.extra[start:stop])]
        read = assemble(table.iloc[start:stop], derived.footprint[start:stop], ctx, offset=start,
                        ids=np.array(buildings.ids[start:stop], dtype=object),
                        geometric_top=derived.top[start:stop], geometric_ground=derived.ground[start:stop],
                        lod2=derived.lod2[start:stop], extra=extra)
        if start == 0:
            read.warnings[:0] = ctx.warnings
        yield read


def _attribute_table(buildings: Collected) -> pd.DataFrame:
    """Building attributes; a merged building without its own value takes its parts' highest
    numeric value (e.g. ``measuredHeight``) or the first part's value."""
    rows = []
    for own, parts in zip(buildings.attributes, buildings.parts):
        row = dict(own)
        for attrs in parts.values():
            for key, value in attrs.items():
                if key not in own:
                    old = row.get(key)
                    if old is None or (_is_number(value) and _is_number(old) and value > old):
                        row[key] = value
        rows.append(row)
    return pd.DataFrame.from_records(rows, index=range(len(rows))) if rows else pd.DataFrame()


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_sequence(path: Path) -> bool:
    """CityJSONSeq: a CityJSON header line followed by a CityJSONFeature line."""
    with open(path, "rb") as handle:
        first, second = handle.readline(1 << 26), handle.readline(1 << 26)
    return b'"CityJSON"' in first and b'"CityJSONFeature"' in second


def _sequence_chunks(path: Path, chunk_size: int | None, *, crs: str | None, height_attr: str | None,
                     default_use: str) -> Iterator[BuildingRead]:
    """CityJSONSeq: a header line (CityJSON with transform and metadata), then one CityJSONFeature
    per line with its own ``CityObjects`` and ``vertices``."""
    with open(path, "rb") as handle:
        header_line = handle.readline()
    try:
        header = json.loads(header_line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: the first line is not a CityJSON header ({exc.msg})") from exc
    if not isinstance(header, dict) or header.get("type") != "CityJSON":
        raise InputError(f"{path}: the first line of a CityJSONSeq must be a CityJSON object")
    check_version(header, path)
    horizontal_vertical = _crs_of(header, crs, path)
    return _sequence_body(path, header, horizontal_vertical, chunk_size, height_attr, default_use)


def _sequence_body(path: Path, header: dict, crs: tuple[str, str | None], chunk_size: int | None,
                   height_attr: str | None, default_use: str) -> Iterator[BuildingRead]:
    transform = header.get("transform")
    grid = _grid_size(transform)
    offset = 0
    batch = Collected()
    with open(path, "rb") as handle:
        handle.readline()
        for number, line in enumerate(handle, start=2):
            if not line.strip():
                continue
            try:
                feature = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: line {number} is not valid JSON ({exc.msg})") from exc
            _collect(path, feature.get("CityObjects") or {}, _vertices(feature, transform, path), batch)
            if chunk_size and len(batch.ids) >= chunk_size:
                yield from _sequence_flush(path, batch, crs, height_attr, default_use, grid, offset)
                offset += len(batch.ids)
                batch = Collected()
    if batch.ids:
        yield from _sequence_flush(path, batch, crs, height_attr, default_use, grid, offset)
        offset += len(batch.ids)
    if offset == 0:
        raise InputError(f"{path}: no Building objects in the file")


def _sequence_flush(path: Path, batch: Collected, crs: tuple[str, str | None], height_attr: str | None,
                    default_use: str, grid: float | None, offset: int) -> Iterator[BuildingRead]:
    ctx = _context(path, crs, batch, height_attr, default_use)
    for read in _chunks(batch, ctx, None, grid):
        read.frame.index = read.frame.index + offset
        read.rejected["index"] = read.rejected["index"] + offset
        yield read


# --- faces -> footprint, heights, LoD2 ----------------------------------------------------------

@dataclass
class Derived:
    """Per building: 2D footprint (or None), ground z, top z, LoD2 MultiPolygon Z (or None) and
    extra attributes (roof_max, roof_min, lod)."""

    footprint: np.ndarray
    ground: np.ndarray
    top: np.ndarray
    lod2: np.ndarray
    extra: list[dict]


def _group_min(values: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.inf)
    np.minimum.at(out, groups, values)
    return np.where(np.isfinite(out), out, np.nan)


def _group_max(values: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, -np.inf)
    np.maximum.at(out, groups, values)
    return np.where(np.isfinite(out), out, np.nan)


def derive(b: Collected, grid_size: float | None, close_gaps: float = 0.0) -> Derived:
    """Footprints, heights and LoD2 faces of all buildings at once (vectorised over faces; one
    shapely union per building).

    Parts of one building whose footprints are separated by gaps narrower than ``2 * close_gaps``
    (metres; quantisation slivers, 1 mm in Den Haag) are joined by a morphological closing
    (dilate then erode by ``close_gaps`` with mitred corners, which leaves straight edges and
    right angles in place).
    """
    n = len(b.ids)
    footprint = np.full(n, None, dtype=object)
    lod2 = np.full(n, None, dtype=object)
    if not b.face_building:
        nan = np.full(n, np.nan)
        return Derived(footprint, nan, nan.copy(), lod2, [{"lod": lod} for lod in b.lods])
    index = np.asarray(b.ring_vertices, dtype=np.int64)
    if index.min() < 0 or index.max() >= len(b.vertices):
        raise InputError(f"a face refers to vertex {int(index.max())} but the file has "
                         f"{len(b.vertices)} vertices")
    coords = b.vertices[index]
    ring_offsets = np.concatenate([[0], np.asarray(b.ring_ends, dtype=np.int64)])
    face_offsets = np.concatenate([[0], np.asarray(b.face_ring_ends, dtype=np.int64)])
    faces = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, (ring_offsets, face_offsets))
    starts = ring_offsets[face_offsets[:-1]]
    face_zmin = np.minimum.reduceat(coords[:, 2], starts)
    face_zmax = np.maximum.reduceat(coords[:, 2], starts)
    building = np.asarray(b.face_building, dtype=np.int64)
    semantic = np.asarray(b.face_semantic, dtype=object)
    top = np.asarray(b.face_top, dtype=bool)
    is_ground = top & (semantic == "GroundSurface")
    is_roof = top & (semantic == "RoofSurface")

    zmin = _group_min(face_zmin[top], building[top], n)
    zmax = _group_max(face_zmax[top], building[top], n)
    ground_faces = _group_min(face_zmin[is_ground], building[is_ground], n)
    has_ground = np.isfinite(ground_faces)
    ground = np.where(has_ground, ground_faces, zmin)
    roof_max = _group_max(face_zmax[is_roof], building[is_roof], n)
    roof_min = _group_min(face_zmin[is_roof], building[is_roof], n)
    roof_max = np.where(np.isfinite(roof_max), roof_max, zmax)

    use = top & np.where(has_ground[building], is_ground, True)
    flat = shapely.force_2d(faces[use])
    keep = shapely.area(flat) > 1e-6  # vertical walls project to (near) zero area
    flat, owner = flat[keep], building[use][keep]
    invalid = ~shapely.is_valid(flat)
    flat[invalid] = shapely.make_valid(flat[invalid])
    order = np.argsort(owner, kind="stable")
    flat, owner = flat[order], owner[order]
    bounds = np.searchsorted(owner, np.arange(n + 1))
    for i in np.flatnonzero(np.diff(bounds) > 0):
        part = flat[bounds[i]:bounds[i + 1]]
        footprint[i] = part[0] if len(part) == 1 else shapely.union_all(part, grid_size=grid_size)
    multi = np.flatnonzero(shapely.get_num_geometries(footprint) > 1) if close_gaps > 0 else []
    if len(multi):
        closed = shapely.buffer(shapely.buffer(footprint[multi], close_gaps, join_style="mitre"),
                                -close_gaps, join_style="mitre")
        fewer = shapely.get_num_geometries(closed) < shapely.get_num_geometries(footprint[multi])
        footprint[multi[fewer]] = closed[fewer]

    in_lod2 = np.asarray(b.face_lod2, dtype=bool)
    if in_lod2.any():
        owners = building[in_lod2]
        order = np.argsort(owners, kind="stable")
        owners = owners[order]
        grouped = shapely.multipolygons(faces[in_lod2][order], indices=owners)
        present = np.unique(owners)
        lod2[present] = grouped[present]
    extra = [{"roof_max": _rounded(hi), "roof_min": _rounded(lo), "lod": lod}
             for hi, lo, lod in zip(roof_max, roof_min, b.lods)]
    return Derived(footprint, ground, zmax, lod2, extra)


def _rounded(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 3)
