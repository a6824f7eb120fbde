"""A chunk of read buildings turned into the CSV bytes that ``COPY buildings`` ingests.

This is the client-side half of an import and its most expensive part (per footprint: WKB,
hex, CSV), so everything here works on whole columns: footprints go shapely -> WKB -> Arrow ->
hex in vectorised passes and the row table is built in Arrow, not as a pandas frame of Python
strings. ``prepare_chunk`` is what :mod:`citytwin.db.prepare_ahead` runs ahead of the COPY.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from citytwin.db.copy import csv_table, hex_column, hex_ewkb, json_column
from citytwin.errors import InputError

ROW_COLUMNS = ("source", "source_id", "footprint", "ground_elevation", "height", "floors", "use",
               "year_built", "attributes", "lod2")
_POLYGON, _MULTIPOLYGON = 3, 6
_WKB_HEADER = 5  # byte order (1) + geometry type (4)


@dataclass(frozen=True)
class TwinCRS:
    """The twin's horizontal CRS as a chunk's preparation needs it (small and picklable)."""

    crs: str
    srid: int


@dataclass
class Prepared:
    """A chunk ready for COPY.

    ``read`` is the chunk's ``BuildingRead`` with an empty frame: only its warnings and rejections
    are still needed, and it crosses a process boundary cheaply that way.
    """

    payload: bytes
    rows: int
    source_ids: np.ndarray
    read: object


def footprint_ewkb(geoms: np.ndarray, srid: int) -> pa.Array:
    """Hex EWKB of every footprint as a 2D MultiPolygon (the column's type), vectorised.

    A Polygon becomes a one-part MultiPolygon by prefixing its WKB with a MultiPolygon header (byte
    order, type with the SRID flag, SRID, part count); a MultiPolygon gets the SRID spliced in after
    its own 5-byte header. Both are byte-for-byte what GEOS writes for the same geometry as EWKB, at
    a fraction of the cost of building MultiPolygon objects or hex strings per row.
    """
    geoms = np.asarray(geoms, dtype=object)
    if shapely.has_z(geoms).any():
        geoms = shapely.force_2d(geoms)
    types = shapely.get_type_id(geoms)
    single, multi = types == _POLYGON, types == _MULTIPOLYGON
    wkb = pa.array(shapely.to_wkb(geoms, output_dimension=2, byte_order=1, include_srid=False), type=pa.binary())
    body = wkb
    if multi.any():  # (an explicit stop: pyarrow 26 fails on binary_slice without one)
        body = pc.if_else(pa.array(multi), pc.binary_slice(wkb, _WKB_HEADER, np.iinfo(np.int32).max), wkb)
    header = "0106000020" + struct.pack("<I", srid).hex()
    prefix = pa.array([header + "01000000", header], pa.string()).take(pa.array(np.where(single, 0, 1)))
    out = pc.binary_join_element_wise(prefix, hex_column(body), "")
    other = ~(single | multi)
    if other.any():  # not expected after repair, but never encode a wrong header: let GEOS write these
        fallback = np.full(len(geoms), None, dtype=object)
        fallback[other] = hex_ewkb(geoms[other], srid)
        out = pc.if_else(pa.array(other), pa.array(fallback, pa.string()), out)
    return out


def _multi_z(geoms: np.ndarray) -> np.ndarray:
    single = shapely.get_type_id(geoms) == _POLYGON
    out = np.asarray(geoms, dtype=object).copy()
    if single.any():
        out[single] = shapely.multipolygons(out[single], indices=np.arange(int(single.sum())))
    return out


def _nullable_ints(frame: pd.DataFrame, name: str, n: int) -> pa.Array:
    if name not in frame:
        return pa.nulls(n, pa.int64())
    return pa.array(pd.array(frame[name], dtype="Int64"), type=pa.int64())


def building_rows(frame, srid: int, source: str) -> pa.Table:
    """The COPY rows (``ROW_COLUMNS``) of a chunk already in the twin's CRS."""
    n = len(frame)
    lod2_hex = pa.nulls(n, pa.string())
    if "lod2" in frame.columns:
        lod2 = frame["lod2"].to_numpy()
        present = np.array([g is not None for g in lod2], dtype=bool)
        if present.any():
            values = np.full(n, None, dtype=object)
            values[present] = hex_ewkb(_multi_z(lod2[present]), srid)
            lod2_hex = pa.array(values, pa.string())

    def floats(name: str) -> pa.Array:
        if name not in frame:
            return pa.nulls(n, pa.float64())
        return pa.array(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float), from_pandas=True)

    columns = {
        "source": pa.array(np.full(n, source, dtype=object), pa.string()),
        "source_id": pa.array(frame["source_id"].astype(str).to_numpy(), pa.string()),
        "footprint": footprint_ewkb(frame.geometry.values, srid),
        "ground_elevation": floats("ground_elevation"),
        "height": floats("height"),
        "floors": _nullable_ints(frame, "floors", n),
        "use": pa.array(frame["use"].astype(str).to_numpy() if "use" in frame else np.full(n, "other", dtype=object),
                        pa.string()),
        "year_built": _nullable_ints(frame, "year_built", n),
        "attributes": pa.array(json_column(frame["attributes"].to_numpy()) if "attributes" in frame
                               else np.full(n, "{}", dtype=object), pa.string()),
        "lod2": lod2_hex,
    }
    return pa.table(columns)


def prepare_chunk(chunk, twin: TwinCRS, source: str, path: str) -> Prepared:
    """Reproject a ``BuildingRead`` into the twin's CRS and serialise it for COPY."""
    frame = chunk.frame
    if not len(frame):
        return Prepared(b"", 0, np.array([], dtype=object), chunk)
    if frame.crs is None:
        raise InputError(f"{path}: the buildings have no CRS; pass --crs EPSG:n")
    if frame.crs.to_epsg() != twin.srid:
        from citytwin.io.crs import to_crs

        frame = to_crs(frame, twin.crs)  # LoD2 faces too (x/y; heights keep their datum)
    rows = building_rows(frame, twin.srid, source)
    ids = rows.column("source_id").to_numpy(zero_copy_only=False)
    return Prepared(csv_table(rows), rows.num_rows, ids, replace(chunk, frame=chunk.frame.iloc[:0]))
