"""Reading buildings from any supported file into one shape: ``BuildingRead``.

Formats: everything GDAL reads as vectors through pyogrio (GeoJSON, GeoPackage, Shapefile,
FlatGeobuf, OSM PBF/XML, ...), GeoParquet (pyarrow), CityJSON 0.2-2.0 and CityJSONSeq
(``citytwin.io.cityjson``). ``iter_building_chunks`` streams a file in chunks of bounded size
(Arrow record batches from GDAL or Parquet row groups, vectorised shapely 2 per chunk);
``read_buildings`` is the same in one chunk.

Field conventions (first match wins, names compared case-insensitively; see ``FieldMap``):

- ``source_id``: source_id (citytwin's own files), id, gml_id, identificatie (BAG), identificatiebagpnd, bag_id, building_id, uuid,
  guid, or ``Name`` spelt so (CEA); OSM ways/relations become ``way/<id>``/``relation/<id>``.
  Without one, a stable 16-hex hash of the feature's WKB and its position in the file.
- ``height`` (m above ground): ``height_attr`` if given (strict: rows without it are rejected), else
  the first non-null of height, measuredHeight, height_ag, building:height, ...; then 3D BAG-style
  absolute roof minus ground (b3_h_dak_70p/b3_h_70p - b3_h_maaiveld); then the LoD geometry
  (CityJSON); then floors x 3.0 m. None of these -> rejected with reason "no height".
- ``floors``, ``year_built``, ``ground_elevation`` (m, orthometric) and ``use`` (``citytwin.io.uses``)
  from the usual names; the remaining columns go into ``attributes`` (JSON-ready, nulls dropped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd
import shapely

from citytwin.errors import InputError
from citytwin.io.footprints import screen_footprints
from citytwin.io.uses import DEFAULT_USE, map_uses, shop_use

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd

FRAME_COLUMNS = ("source_id", "geometry", "ground_elevation", "height", "floors", "use", "year_built",
                 "attributes", "lod2")
REJECTED_COLUMNS = ("index", "source_id", "reason")
METRES_PER_FLOOR = 3.0  # storey height used when only the number of floors is known
MAX_HEIGHT = 1000.0  # m; taller is a unit or data error (the tallest building is 828 m)

ID_FIELDS = ("source_id", "id", "gml_id", "identificatie", "identificatiebagpnd", "bag_id", "building_id", "uuid", "guid")
EXACT_ID_FIELDS = ("Name",)  # CEA's building id; a lower-case "name" (OSM) is a label, not an id
HEIGHT_FIELDS = ("height", "measuredheight", "height_ag", "building:height", "building_height", "bldg_height",
                 "bldgheight", "hauteur", "hoogte")
ROOF_ABS_FIELDS = ("b3_h_dak_70p", "b3_h_70p", "h_dak_70p")
GROUND_FIELDS = ("ground_elevation", "b3_h_maaiveld", "h_maaiveld", "ground_z", "ground_height",
                 "terrainheight", "terrain_height", "baseelev", "base_elevation")
FLOOR_FIELDS = ("floors", "floors_ag", "building:levels", "storeysaboveground", "levels", "num_floors",
                "b3_bouwlagen", "aantal_bouwlagen", "storeys")
YEAR_FIELDS = ("year_built", "yearofconstruction", "construction_year", "oorspronkelijkbouwjaar", "bouwjaar",
               "start_date", "building:year", "year")
USE_FIELDS = ("use", "building_use", "usage", "function", "gebruiksdoel", "1st_use", "shop", "amenity",
              "building", "category")
OSM_TAG_KEYS = ("height", "building:height", "building:levels", "start_date", "building:year")
RASTER_SUFFIXES = {".tif", ".tiff", ".vrt", ".asc", ".png", ".jpg", ".jpeg", ".nc", ".img", ".jp2"}


@dataclass
class BuildingRead:
    """Buildings read from one file (or one chunk of it).

    Attributes
    ----------
    frame
        Accepted buildings with exactly ``FRAME_COLUMNS``; ``geometry`` is the 2D footprint in ``crs``;
        the index is the feature's position in the file.
    rejected
        One row per rejected feature: ``index`` (position in the file), ``source_id``, ``reason``.
    crs, vertical_crs
        Horizontal CRS (``"EPSG:28992"``) and height datum (``"EPSG:5709"``) or None.
    source
        Dataset name (the file stem).
    warnings
        Things the user should know that did not reject anything.
    """

    frame: "gpd.GeoDataFrame"
    rejected: pd.DataFrame
    crs: str | None
    vertical_crs: str | None
    source: str
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)


@dataclass(frozen=True)
class FieldMap:
    """Which source columns feed which twin column (decided once per file from its schema)."""

    ids: tuple[str, ...] = ()
    heights: tuple[str, ...] = ()
    roof_abs: str | None = None
    ground: tuple[str, ...] = ()
    floors: str | None = None
    year: str | None = None
    uses: tuple[str, ...] = ()
    strict_height: bool = False

    @property
    def consumed(self) -> set[str]:
        used = {*self.ids[:1], *self.heights, *self.ground, self.roof_abs, self.floors, self.year}
        return {c for c in used if c}


@dataclass
class ReadContext:
    """File-level facts every chunk needs."""

    path: Path
    source: str
    crs: str | None
    vertical_crs: str | None
    fields: FieldMap
    default_use: str = DEFAULT_USE
    geographic: bool = False
    y_offset: float = 0.0
    warnings: list[str] = field(default_factory=list)


def detect_fields(columns: list[str], *, height_attr: str | None, what: str) -> FieldMap:
    """Map source columns onto the twin's columns; a named ``height_attr`` must exist."""
    lower = {c.lower(): c for c in reversed(columns)}  # first spelling wins on case collisions

    def all_of(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(lower[n.lower()] for n in names if n.lower() in lower)

    def first(names: tuple[str, ...]) -> str | None:
        found = all_of(names)
        return found[0] if found else None

    if height_attr is not None:
        if height_attr not in columns:
            available = ", ".join(sorted(columns)) or "(none)"
            raise InputError(f"{what}: no attribute {height_attr!r} for --height-attr; "
                             f"available: {available}")
        heights, strict = (height_attr,), True
    else:
        heights, strict = all_of(HEIGHT_FIELDS), False
    roof_abs = first(ROOF_ABS_FIELDS)
    ground = all_of(GROUND_FIELDS)
    if roof_abs and not ground:
        roof_abs = None  # an absolute roof height is useless without the ground under it
    ids = all_of(ID_FIELDS) + tuple(c for c in EXACT_ID_FIELDS if c in columns)
    return FieldMap(ids=ids[:1], heights=heights, roof_abs=roof_abs, ground=ground,
                    floors=first(FLOOR_FIELDS), year=first(YEAR_FIELDS), uses=all_of(USE_FIELDS),
                    strict_height=strict)


_NUMBER = re.compile(r"^\s*(-?\d+(?:[.,]\d+)?)\s*(m|meters?|metres?|ft|feet|')?\s*$", re.IGNORECASE)


def to_number(values: pd.Series) -> pd.Series:
    """Numbers from numeric or text columns (``"12"``, ``"12,5 m"``, ``"40 ft"``, ``"40'"`` -> metres)."""
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return pd.to_numeric(values, errors="coerce").astype("float64")
    text = values.astype("string")
    parts = text.str.extract(_NUMBER)
    number = pd.to_numeric(parts[0].str.replace(",", ".", regex=False), errors="coerce")
    feet = parts[1].str.lower().isin(["ft", "feet", "'"]).fillna(False).to_numpy(dtype=bool)
    return pd.Series(np.where(feet, number * 0.3048, number), index=values.index, dtype="float64")


def _coalesce(table: pd.DataFrame, names: tuple[str, ...]) -> pd.Series:
    out = pd.Series(np.nan, index=table.index, dtype="float64")
    for name in names:
        out = out.fillna(to_number(table[name]))
    return out


def _years(values: pd.Series) -> pd.Series:
    """Four-digit years (``"1923"``, ``1923``, ``"1923-05-01"``); outside 1000-2100 -> NA."""
    if pd.api.types.is_numeric_dtype(values.dtype):
        year = pd.to_numeric(values, errors="coerce")
    else:
        year = pd.to_numeric(values.astype("string").str.extract(r"(\d{4})")[0], errors="coerce")
    year = year.where((year >= 1000) & (year <= 2100))
    return year.round().astype("Int64")


def stable_ids(geoms: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """16-hex ids from the WKB of each geometry and its position in the file (deterministic across
    runs: pandas' SipHash with its fixed default key)."""
    wkb = shapely.to_wkb(geoms, output_dimension=2)
    keys = np.array([(w or b"") + int(p).to_bytes(8, "little") for w, p in zip(wkb, positions)], dtype=object)
    return np.array([f"{v:016x}" for v in pd.util.hash_array(keys)], dtype=object)


def _json_ready(column: pd.Series) -> list:
    """Python-native values with None for nulls (numpy scalars, timestamps and bytes converted)."""
    mask = column.isna().to_numpy()
    if pd.api.types.is_float_dtype(column.dtype):
        mask |= ~np.isfinite(column.to_numpy(dtype=float, na_value=np.nan))  # JSON has no NaN/Infinity
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        values = column.astype("string").tolist()
    else:
        values = column.tolist()
        sample = next((v for v, m in zip(values, mask) if not m), None)
        if sample is not None and not isinstance(sample, (str, int, float, bool, dict, list)):
            values = [_native(v) for v in values]
    return [None if m else v for v, m in zip(values, mask)]


def _native(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool, dict, list)) or value is None:
        return value
    return str(value)


def attribute_dicts(table: pd.DataFrame, columns: list[str]) -> list[dict]:
    """One JSON-ready dict per row of ``table[columns]``; null values are left out."""
    if not columns:
        return [{} for _ in range(len(table))]
    values = [_json_ready(table[c]) for c in columns]
    if any(None in column for column in values):
        return [{k: v for k, v in zip(columns, row) if v is not None} for row in zip(*values)]
    # Without nulls nothing is left out: build the dicts without testing every value (a million rows)
    if len(columns) == 1:
        name = columns[0]
        return [{name: v} for v in values[0]]
    return [dict(zip(columns, row)) for row in zip(*values)]


def _source_ids(table: pd.DataFrame, geoms: np.ndarray, positions: np.ndarray, fields: FieldMap,
                ids: np.ndarray | None) -> np.ndarray:
    """Ids from the id column (integral floats printed as integers), hashes where there are none."""
    if ids is None:
        ids = np.full(len(table), None, dtype=object)
        if fields.ids:
            raw = table[fields.ids[0]]
            if pd.api.types.is_float_dtype(raw.dtype) and (raw.dropna() % 1 == 0).all():
                raw = raw.astype("Int64")
            ids = raw.astype("string").astype(object).where(raw.notna(), None).to_numpy()
    ids = np.asarray(ids, dtype=object).copy()
    missing = pd.isna(ids) | (ids == "")
    if missing.any():
        ids[missing] = stable_ids(np.asarray(geoms, dtype=object)[missing], positions[missing])
    return ids


def _heights(table: pd.DataFrame, fields: FieldMap, top: np.ndarray | None,
             geometric_ground: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, pd.Series, np.ndarray]:
    """(height, ground, floors, estimated-from-floors mask) in the precedence of the module docstring."""
    height = _coalesce(table, fields.heights).to_numpy()
    ground = _coalesce(table, fields.ground).to_numpy()
    if geometric_ground is not None:
        ground = np.where(np.isnan(ground), geometric_ground, ground)
    floors = (to_number(table[fields.floors]).round().astype("Int64") if fields.floors
              else pd.Series(pd.NA, index=table.index, dtype="Int64"))
    from_floors = np.zeros(len(table), dtype=bool)
    if fields.strict_height:
        return height, ground, floors, from_floors
    if fields.roof_abs:
        height = np.where(np.isnan(height), to_number(table[fields.roof_abs]).to_numpy() - ground, height)
    if top is not None:
        height = np.where(np.isnan(height), top - ground, height)
    levels = floors.fillna(0).to_numpy(dtype=float)
    from_floors = np.isnan(height) & (levels > 0)
    height = np.where(from_floors, levels * METRES_PER_FLOOR, height)
    return height, ground, floors, from_floors


def _height_reasons(reason: np.ndarray, height: np.ndarray, fields: FieldMap) -> np.ndarray:
    """Reject rows without a usable height (rows already rejected keep their first reason)."""
    bad = pd.isna(reason) & ~((height > 0) & (height <= MAX_HEIGHT))  # NaN fails both comparisons
    for i in np.flatnonzero(bad):
        h = height[i]
        if np.isnan(h):
            reason[i] = f"no height ({fields.heights[0]} missing)" if fields.strict_height else "no height"
        elif h <= 0:
            reason[i] = f"height not positive ({h:.2f} m)"
        else:
            reason[i] = f"implausible height ({h:.1f} m)"
    return reason


def assemble(table: pd.DataFrame, geoms: np.ndarray, ctx: ReadContext, *, offset: int,
             ids: np.ndarray | None = None, geometric_top: np.ndarray | None = None,
             geometric_ground: np.ndarray | None = None, lod2: np.ndarray | None = None,
             extra: list[dict] | None = None) -> BuildingRead:
    """Turn one chunk of source rows into a ``BuildingRead`` (the common back half of every reader).

    ``geometric_top``/``geometric_ground`` (absolute z of the highest and ground point) and ``lod2``
    come from 3D formats; a ground attribute wins over the geometric ground because some models
    extend their walls down to a base plane below the terrain (Rotterdam's 0.2 model stops at
    z = 0 and states the terrain in ``TerrainHeight``). ``extra`` are attribute dicts merged last.
    """
    import geopandas as gpd

    table = table.reset_index(drop=True)
    positions = np.arange(offset, offset + len(table))
    fields = ctx.fields
    if ctx.y_offset:
        geoms = shapely.transform(geoms, lambda c: c + np.array([0.0, ctx.y_offset]))
    repaired = screen_footprints(geoms, geographic=ctx.geographic)
    ids = _source_ids(table, geoms, positions, fields, ids)
    height, ground, floors, from_floors = _heights(table, fields, geometric_top, geometric_ground)
    reason = _height_reasons(repaired.reason.copy(), height, fields)
    uses = map_uses(*(shop_use(table[c]) if c.lower() == "shop" else table[c] for c in fields.uses),
                    index=table.index, default=ctx.default_use)
    year = _years(table[fields.year]) if fields.year else pd.Series(pd.NA, index=table.index, dtype="Int64")
    attributes = attribute_dicts(table, [c for c in table.columns if c not in fields.consumed])
    for attrs, more in zip(attributes, extra or []):
        attrs.update(more)

    ok = pd.isna(reason)
    frame = gpd.GeoDataFrame({
        "source_id": ids[ok],
        "geometry": gpd.GeoSeries(repaired.geometry[ok], crs=ctx.crs),
        "ground_elevation": ground[ok].astype("float64"),
        "height": height[ok].astype("float64"),
        "floors": floors[ok].reset_index(drop=True),
        "use": uses[ok].to_numpy(),
        "year_built": year[ok].reset_index(drop=True),
        "attributes": pd.Series([a for a, k in zip(attributes, ok) if k], dtype=object),
        "lod2": pd.Series(lod2[ok] if lod2 is not None else [None] * int(ok.sum()), dtype=object),
    }, geometry="geometry", crs=ctx.crs)
    frame.index = pd.Index(positions[ok], name="feature")
    rejected = pd.DataFrame({"index": positions[~ok], "source_id": ids[~ok], "reason": reason[~ok]})
    warnings = []
    if repaired.repaired[ok].any():
        warnings.append(f"{int(repaired.repaired[ok].sum())} invalid footprints repaired (make_valid, "
                        "area change < 1 %)")
    if (from_floors & ok).any():
        estimated = int((from_floors & ok).sum())
        warnings.append(f"{estimated} heights estimated as floors x {METRES_PER_FLOOR:g} m")
    return BuildingRead(frame=frame, rejected=rejected, crs=ctx.crs, vertical_crs=ctx.vertical_crs,
                        source=ctx.source, warnings=warnings)


def concat_reads(reads: list[BuildingRead], *, source: str, crs: str | None = None,
                 vertical_crs: str | None = None) -> BuildingRead:
    """One ``BuildingRead`` from chunks of the same file."""
    import geopandas as gpd

    if not reads:
        return BuildingRead(frame=empty_frame(crs), rejected=pd.DataFrame(columns=list(REJECTED_COLUMNS)),
                            crs=crs, vertical_crs=vertical_crs, source=source)
    first = reads[0]
    frames = [r.frame for r in reads]
    frame = gpd.GeoDataFrame(pd.concat(frames), geometry="geometry", crs=first.frame.crs)
    frame["floors"] = frame["floors"].astype("Int64")
    frame["year_built"] = frame["year_built"].astype("Int64")
    rejected = pd.concat([r.rejected for r in reads], ignore_index=True)
    warnings = [w for r in reads for w in r.warnings]
    return replace(first, frame=frame, rejected=rejected, warnings=warnings)


def empty_frame(crs: str | None) -> "gpd.GeoDataFrame":
    import geopandas as gpd

    frame = gpd.GeoDataFrame({c: pd.Series(dtype=object) for c in FRAME_COLUMNS if c != "geometry"},
                             geometry=gpd.GeoSeries([], crs=crs), crs=crs)
    return frame[list(FRAME_COLUMNS)]


def read_buildings(path: str | Path, *, crs: str | None = None, height_attr: str | None = None,
                   layer: str | None = None, default_use: str = DEFAULT_USE) -> BuildingRead:
    """All buildings of a file (see the module docstring for formats and field conventions).

    Parameters
    ----------
    path
        The file (a folder only for formats GDAL opens as one, e.g. a FileGDB).
    crs
        CRS of the coordinates when the file declares none (``"EPSG:28992"``); if the file declares
        one, ``crs`` must agree with it horizontally (it may add the height datum).
    height_attr
        Attribute holding the height in metres above ground; must exist.
    layer
        Layer of a multi-layer file (OSM: ``multipolygons`` by default).
    default_use
        Use for buildings whose use is unknown.

    Raises
    ------
    InputError
        Unreadable, empty or wrong-kind file, missing or unknown CRS, missing ``height_attr``.
    """
    chunks = iter_building_chunks(path, chunk_size=None, crs=crs, height_attr=height_attr, layer=layer,
                                  default_use=default_use)
    reads = list(chunks)
    return concat_reads(reads, source=Path(path).stem)


def iter_building_chunks(path: str | Path, chunk_size: int | None = 50_000, *, crs: str | None = None,
                         height_attr: str | None = None, layer: str | None = None,
                         default_use: str = DEFAULT_USE) -> Iterator[BuildingRead]:
    """Stream a building file as ``BuildingRead`` chunks of at most ``chunk_size`` source features.

    The file is opened and checked (kind, layer, CRS, ``height_attr``) before this returns, so
    errors surface before any chunk is consumed. ``chunk_size=None`` reads everything at once. The
    default is small enough that the import pipeline (``citytwin.db.prepare_ahead``) fills and
    drains quickly and large enough that per-chunk overhead stays a few percent.
    The first chunk carries the file-level warnings.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    kind = sniff_kind(path)
    if kind in ("cityjson", "cityjsonseq"):
        from citytwin.io.cityjson import iter_cityjson_chunks

        return iter_cityjson_chunks(path, chunk_size, crs=crs, height_attr=height_attr,
                                    default_use=default_use)
    if kind == "raster":
        raise InputError(f"{path}: a raster file, not a vector layer of buildings (import it as a DEM)")
    if kind == "parquet":
        return _open_parquet(path, chunk_size, crs=crs, height_attr=height_attr, default_use=default_use)
    from citytwin.io.vector import open_ogr

    return open_ogr(path, chunk_size, crs=crs, height_attr=height_attr, layer=layer, default_use=default_use)


def sniff_kind(path: Path) -> str:
    """``cityjson``, ``cityjsonseq``, ``parquet``, ``raster`` or ``ogr`` from the name and first bytes."""
    name = path.name.lower()
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".geoparquet"):
        return "parquet"
    if suffix in RASTER_SUFFIXES:
        return "raster"
    if path.is_file() and suffix in (".json", ".jsonl", ".cityjson", ".geojson", ".city"):
        with open(path, "rb") as handle:
            head = handle.read(65536).decode("utf-8", errors="replace")
        if '"CityJSONFeature"' in head or name.endswith((".city.jsonl", ".cityjsonl")):
            return "cityjsonseq"
        if '"CityObjects"' in head or re.search(r'"type"\s*:\s*"City(JSON|Model)"', head):
            return "cityjson"
    return "ogr"


# --- GeoParquet ----------------------------------------------------------------------------------

def _open_parquet(path: Path, chunk_size: int | None, *, crs: str | None, height_attr: str | None,
                  default_use: str) -> Iterator[BuildingRead]:
    """GeoParquet 1.x: the ``geo`` key of the schema metadata names the primary geometry column,
    its encoding and CRS (PROJJSON; absent means OGC:CRS84, null means unknown)."""
    import json

    import pyarrow.parquet as pq

    from citytwin.io.crs import parse_crs, resolve_crs

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's ArrowInvalid and OSError: not Parquet or truncated
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    metadata = parquet.schema_arrow.metadata or {}
    if b"geo" not in metadata:
        raise InputError(f"{path}: a Parquet file without GeoParquet metadata ('geo'), so it has no geometry")
    geo = json.loads(metadata[b"geo"])
    primary = geo.get("primary_column", "geometry")
    column = geo.get("columns", {}).get(primary, {})
    types = [t.lower() for t in column.get("geometry_types", [])]
    if types and not any("polygon" in t for t in types):
        raise InputError(f"{path}: geometry column {primary!r} holds {', '.join(column['geometry_types'])}, "
                         "not building footprints (polygons)")
    if parquet.metadata.num_rows == 0:
        raise InputError(f"{path}: the file has no features")
    file_crs = column["crs"] if "crs" in column else "OGC:CRS84"
    horizontal, vertical = resolve_crs(file_crs, crs, what=str(path))
    columns = [n for n in parquet.schema_arrow.names if n != primary]
    ctx = ReadContext(path=path, source=path.stem, crs=horizontal, vertical_crs=vertical,
                      fields=detect_fields(columns, height_attr=height_attr, what=str(path)),
                      default_use=default_use, geographic=parse_crs(horizontal).is_geographic)
    return _parquet_chunks(parquet, primary, column.get("encoding", "WKB"), chunk_size, ctx)


def _parquet_chunks(parquet, primary: str, encoding: str, chunk_size: int | None,
                    ctx: ReadContext) -> Iterator[BuildingRead]:
    import geopandas as gpd

    offset = 0
    if encoding.upper() == "WKB":
        batches = parquet.iter_batches(batch_size=chunk_size or max(parquet.metadata.num_rows, 1))
        for batch in batches:
            wkb = batch.column(primary).to_numpy(zero_copy_only=False)
            geoms = np.asarray(shapely.from_wkb(wkb), dtype=object)
            table = batch.drop_columns([primary]).to_pandas()
            yield assemble(table, geoms, ctx, offset=offset)
            offset += batch.num_rows
        return
    # GeoArrow-native encodings: geopandas decodes them; read once and slice.
    whole = gpd.read_parquet(ctx.path)
    step = chunk_size or max(len(whole), 1)
    for start in range(0, len(whole), step):
        part = whole.iloc[start:start + step]
        table = pd.DataFrame(part.drop(columns=[part.geometry.name]))
        yield assemble(table, np.asarray(part.geometry.values, dtype=object), ctx, offset=start)
