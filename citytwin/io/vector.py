"""Reading building footprints from GDAL vector files (GeoPackage, GeoJSON, Shapefile, FlatGeobuf,
OSM, ...) through pyogrio's Arrow stream: the file's CRS, layer and geometry type are checked once,
then features arrive as Arrow batches whose WKB goes straight to shapely and whose attributes go to
``citytwin.io.buildings.assemble``. ``open_ogr`` is what ``iter_building_chunks`` calls for them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import shapely

from citytwin.errors import InputError
from citytwin.io.buildings import OSM_TAG_KEYS, BuildingRead, FieldMap, ReadContext, assemble, detect_fields

_HSTORE = re.compile(r'"((?:[^"\\]|\\.)*)"=>"((?:[^"\\]|\\.)*)"')
_OSM_WHERE = "building IS NOT NULL AND building <> 'no'"


def _unreadable(path: Path, exc: Exception) -> InputError:
    """The error for a file GDAL cannot open as vectors: say if it is a raster."""
    try:
        import rasterio

        with rasterio.open(path):
            return InputError(f"{path}: a raster file, not a vector layer of buildings (import it as a DEM)")
    except Exception:  # not a raster either: report GDAL's vector error
        pass
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    message = message.split("; It might help")[0]  # drop GDAL's generic driver-prefix hint
    return InputError(f"{path}: not a readable vector file ({message})")


def _declares_crs(path: Path) -> bool:
    """Whether a GeoJSON file carries the (pre-RFC 7946) ``crs`` member near its start."""
    with open(path, "rb") as handle:
        return b'"crs"' in handle.read(65536)


def _choose_layer(path: Path, layer: str | None) -> str:
    import pyogrio

    try:
        layers = pyogrio.list_layers(path)
    except Exception as exc:  # pyogrio's DataSourceError and friends: unreadable or unknown format
        raise _unreadable(path, exc) from exc
    names = [str(name) for name, _ in layers]
    if layer is not None:
        if layer not in names:
            raise InputError(f"{path}: no layer {layer!r}; layers: {', '.join(names)}")
        return layer
    if len(names) == 1:
        return names[0]
    if "multipolygons" in names:  # OSM: closed ways and relations with area tags
        return "multipolygons"
    polygonal = [str(name) for name, kind in layers if kind and "polygon" in str(kind).lower()]
    if len(polygonal) == 1:
        return polygonal[0]
    if not names:
        raise InputError(f"{path}: the file holds no layers")
    raise InputError(f"{path}: {len(names)} layers ({', '.join(names)}); choose one with --layer")


def _check_geometry_type(path: Path, layer: str, geometry_type: str | None) -> None:
    if geometry_type is None:
        raise InputError(f"{path}: layer {layer!r} has no geometry (a plain table); buildings need "
                         "polygon footprints")
    kind = geometry_type.lower()
    if "polygon" in kind or "unknown" in kind or "collection" in kind or "surface" in kind:
        return
    raise InputError(f"{path}: layer {layer!r} holds {geometry_type} features, not building footprints "
                     "(polygons)")


def open_ogr(path: Path, chunk_size: int | None, *, crs: str | None, height_attr: str | None,
             layer: str | None, default_use: str) -> Iterator[BuildingRead]:
    """Open a GDAL vector layer of buildings, check it, and return its chunk iterator (see
    ``citytwin.io.buildings.iter_building_chunks``)."""
    import pyogrio

    from citytwin.io.crs import fix_false_northing, parse_crs, resolve_crs

    layer = _choose_layer(path, layer)
    try:
        info = pyogrio.read_info(path, layer=layer)
    except Exception as exc:  # unreadable layer
        raise _unreadable(path, exc) from exc
    _check_geometry_type(path, layer, info.get("geometry_type"))
    osm = info.get("driver") == "OSM"
    if info.get("features") == 0:
        raise InputError(f"{path}: layer {layer!r} has no features")
    file_crs = info.get("crs")
    if crs is not None and info.get("driver") in ("GeoJSON", "GeoJSONSeq") and not _declares_crs(path):
        file_crs = None  # RFC 7946's implied CRS84, not a declaration: --crs describes old-style files
    horizontal, vertical = resolve_crs(file_crs, crs, what=str(path))
    bounds = info.get("total_bounds")
    geographic = parse_crs(horizontal).is_geographic
    if geographic and bounds is not None and np.all(np.isfinite(bounds)) and (
            min(bounds[0], bounds[2]) < -180 or max(bounds[0], bounds[2]) > 360
            or min(bounds[1], bounds[3]) < -90 or max(bounds[1], bounds[3]) > 90):
        raise InputError(f"{path}: coordinates {tuple(round(float(b), 1) for b in bounds)} are not longitude/"
                         f"latitude, but the file is read as {horizontal}; pass the right --crs")
    columns = [str(c) for c in info["fields"]]
    if osm:
        columns += [k for k in OSM_TAG_KEYS if k not in columns]
    ctx = ReadContext(path=path, source=path.stem, crs=horizontal, vertical_crs=vertical,
                      fields=detect_fields(columns, height_attr=height_attr, what=str(path)),
                      default_use=default_use, geographic=geographic)
    if not geographic and bounds is not None and np.all(np.abs(np.asarray(bounds)[[0, 2]]) <= 180) \
            and np.all(np.abs(np.asarray(bounds)[[1, 3]]) <= 90):
        ctx.warnings.append(f"all coordinates lie within +-180/+-90 although the CRS is {horizontal}: "
                            "are they longitude/latitude?")
    if info.get("crs") and bounds is not None and np.all(np.isfinite(bounds)):
        fix = fix_false_northing(parse_crs(horizontal), float(bounds[1]))
        if fix is not None:
            ctx.crs, ctx.y_offset, warning = fix
            ctx.warnings.append(warning)
    where = _OSM_WHERE if osm else None
    return _ogr_chunks(path, layer, where, chunk_size, ctx, osm=osm)


def _arrow_to_frame(batch) -> tuple[pd.DataFrame, np.ndarray]:
    """Attribute table (nullable integers kept as Int64) and shapely geometries of an Arrow batch."""
    import pyarrow as pa

    geom_index = next((i for i, f in enumerate(batch.schema)
                       if (f.metadata or {}).get(b"ARROW:extension:name") == b"geoarrow.wkb"), None)
    if geom_index is None:
        geom_index = batch.schema.get_field_index("wkb_geometry")
    wkb = batch.column(geom_index).to_numpy(zero_copy_only=False)
    geoms = shapely.from_wkb(wkb, on_invalid="warn")
    table = batch.remove_column(geom_index).to_pandas(
        types_mapper=lambda t: pd.Int64Dtype() if pa.types.is_integer(t) else None)
    return table, np.asarray(geoms, dtype=object)


def _gdal_batches(path: Path, layer: str, where: str | None, chunk_size: int | None) -> Iterator:
    """Arrow batches from GDAL (all in one table when ``chunk_size`` is None); GDAL failing
    mid-file (truncated or corrupt data) becomes an InputError, errors in our own code do not."""
    import pyarrow as pa
    from pyogrio.raw import open_arrow

    done = 0
    try:
        with open_arrow(path, layer=layer, where=where, batch_size=chunk_size or 65536,
                        use_pyarrow=True) as source:
            _, reader = source
            if not chunk_size:
                yield pa.Table.from_batches(list(reader), reader.schema)
                return
            for batch in reader:
                done += batch.num_rows
                yield batch
    except Exception as exc:  # pyogrio/pyarrow raise several types for unreadable data
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: reading failed after {done} features ({message})") from exc


def _ogr_chunks(path: Path, layer: str, where: str | None, chunk_size: int | None, ctx: ReadContext,
                *, osm: bool) -> Iterator[BuildingRead]:
    offset = 0
    for batch in _gdal_batches(path, layer, where, chunk_size):
        if batch.num_rows == 0:
            continue
        table, geoms = _arrow_to_frame(batch)
        ids, extra = (None, None)
        if osm:
            table, ids, extra = _expand_osm(table, ctx.fields)
        read = assemble(table, geoms, ctx, offset=offset, ids=ids, extra=extra)
        if offset == 0:
            read.warnings[:0] = ctx.warnings
        offset += len(table)
        yield read
    if offset == 0:
        what = "buildings (building=*)" if osm else "features"
        raise InputError(f"{path}: layer {layer!r} has no {what}")


def _expand_osm(table: pd.DataFrame, fields: FieldMap) -> tuple[pd.DataFrame, np.ndarray, list[dict]]:
    """OSM ids (``way/1``, ``relation/2``) and the tags hidden in GDAL's ``other_tags`` hstore."""
    raw = table["other_tags"] if "other_tags" in table else pd.Series(None, index=table.index, dtype=object)
    tags = [dict(_HSTORE.findall(t)) if isinstance(t, str) else {} for t in raw]
    table = table.drop(columns=[c for c in ("other_tags",) if c in table])
    for key in OSM_TAG_KEYS:
        if key not in table:
            table[key] = pd.Series([t.get(key) for t in tags], index=table.index, dtype=object)
    relation = table["osm_id"] if "osm_id" in table else pd.Series(None, index=table.index, dtype=object)
    way = table["osm_way_id"] if "osm_way_id" in table else pd.Series(None, index=table.index, dtype=object)
    ids = np.where(relation.notna(), "relation/" + relation.astype("string"),
                   "way/" + way.astype("string")).astype(object)
    ids[relation.isna().to_numpy() & way.isna().to_numpy()] = None
    consumed = fields.consumed | set(OSM_TAG_KEYS)
    extra = [{k: v for k, v in t.items() if k not in consumed} for t in tags]
    return table, ids, extra
