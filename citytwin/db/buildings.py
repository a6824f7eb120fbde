"""Loading buildings into the twin: one transaction per import, COPY, and an upsert where needed.

A new source is COPYed straight into ``buildings``; re-importing a source (or a file that repeats a
building id) goes through a staging table and one upsert keyed on ``(source, source_id)``, so rows
are updated in place instead of duplicated (last occurrence wins). Reading and serialising the next
chunk runs in a thread while the database ingests the current one. Any error rolls the whole import
back: the database is never half-written.
"""

from __future__ import annotations

import queue
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from citytwin.db.copy import copy_payload, csv_payload, hex_ewkb, json_column
from citytwin.db.twin import Twin, get_twin, init_twin
from citytwin.errors import InputError

ROW_COLUMNS = ("source", "source_id", "footprint", "ground_elevation", "height", "floors", "use",
               "year_built", "attributes", "lod2")
# Above this many rows into an empty table, rebuilding the spatial index once beats maintaining it.
REBUILD_INDEX_THRESHOLD = 50_000


@dataclass
class ImportSummary:
    """What an import did, printed by ``--json``."""

    kind: str
    source: str
    path: str
    crs: str = ""
    imported: int = 0
    updated: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejections: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self, max_rejections: int = 100) -> dict:
        out = dict(self.__dict__)
        out["rejections"] = self.rejections[:max_rejections]
        return out


def _twin_for(conn: Connection, crs: str | None, vertical_crs: str | None, frame: gpd.GeoDataFrame,
              twin_name: str) -> Twin:
    from pyproj import CRS

    from citytwin.io.crs import choose_metric_crs

    twin = get_twin(conn)
    if twin is not None:
        if vertical_crs and not twin.vertical_crs:
            twin = init_twin(conn, twin.name, twin.crs, vertical_crs)
        return twin
    if crs is None:
        raise InputError("the input has no CRS; pass --crs EPSG:n")
    metric = crs if CRS.from_user_input(crs).is_projected else choose_metric_crs(frame)
    return init_twin(conn, twin_name, metric, vertical_crs)


def footprint_ewkb(geoms: np.ndarray, srid: int) -> np.ndarray:
    """Hex EWKB of every footprint as a 2D MultiPolygon (the column's type), vectorised.

    A single polygon becomes a one-part MultiPolygon by prefixing its WKB with the MultiPolygon
    header (byte order, type with the SRID flag, SRID, part count): far cheaper than building
    MultiPolygon objects in GEOS for a million footprints.
    """
    geoms = np.asarray(geoms, dtype=object)
    if shapely.has_z(geoms).any():
        geoms = shapely.force_2d(geoms)
    out = np.empty(len(geoms), dtype=object)
    single = shapely.get_type_id(geoms) == 3
    if single.any():
        header = "0106000020" + struct.pack("<I", srid).hex() + "01000000"
        parts = shapely.to_wkb(geoms[single], hex=True, output_dimension=2, byte_order=1, include_srid=False)
        out[single] = [header + part for part in parts]
    if (~single).any():
        out[~single] = hex_ewkb(geoms[~single], srid)
    return out


def _rows(frame: gpd.GeoDataFrame, srid: int, source: str) -> pd.DataFrame:
    """The COPY rows of a chunk already in the twin's CRS."""
    n = len(frame)
    lod2 = frame["lod2"].to_numpy() if "lod2" in frame.columns else np.full(n, None, dtype=object)
    present = np.array([g is not None for g in lod2], dtype=bool)
    lod2_hex = np.full(n, None, dtype=object)
    if present.any():
        lod2_hex[present] = hex_ewkb(_multi_z(lod2[present]), srid)
    return pd.DataFrame({
        "source": source,
        "source_id": frame["source_id"].astype(str).to_numpy(),
        "footprint": footprint_ewkb(frame.geometry.values, srid),
        "ground_elevation": pd.to_numeric(frame["ground_elevation"], errors="coerce").to_numpy()
        if "ground_elevation" in frame else np.full(n, np.nan),
        "height": pd.to_numeric(frame["height"], errors="coerce").to_numpy(),
        "floors": pd.array(frame["floors"], dtype="Int64") if "floors" in frame else pd.array([pd.NA] * n, "Int64"),
        "use": frame["use"].astype(str).to_numpy() if "use" in frame else "other",
        "year_built": pd.array(frame["year_built"], dtype="Int64") if "year_built" in frame
        else pd.array([pd.NA] * n, "Int64"),
        "attributes": json_column(frame["attributes"].to_numpy()) if "attributes" in frame else "{}",
        "lod2": lod2_hex,
    })


def _multi_z(geoms: np.ndarray) -> np.ndarray:
    single = shapely.get_type_id(geoms) == 3
    out = np.asarray(geoms, dtype=object).copy()
    if single.any():
        out[single] = shapely.multipolygons(out[single], indices=np.arange(int(single.sum())))
    return out


@dataclass
class _Prepared:
    """A chunk ready for COPY, prepared off the main thread."""

    payload: bytes
    rows: int
    source_ids: np.ndarray
    read: object  # the BuildingRead (for warnings and rejections)


def _prepare(chunk, twin: Twin, source: str, path: str) -> _Prepared:
    frame = chunk.frame
    if len(frame):
        if frame.crs is None:
            raise InputError(f"{path}: the buildings have no CRS; pass --crs EPSG:n")
        if frame.crs.to_epsg() != twin.srid:
            from citytwin.io.crs import to_crs

            frame = to_crs(frame, twin.crs)  # LoD2 faces too (x/y; heights keep their datum)
    rows = _rows(frame, twin.srid, source) if len(frame) else pd.DataFrame(columns=ROW_COLUMNS)
    payload = csv_payload(rows, ROW_COLUMNS) if len(rows) else b""
    return _Prepared(payload, len(rows), rows["source_id"].to_numpy() if len(rows) else np.array([]), chunk)


def _prepared_chunks(first, rest: Iterator, twin: Twin, source: str, path: str) -> Iterator[_Prepared]:
    """Prepare chunks in a background thread, at most two ahead of the database."""
    ready: queue.Queue = queue.Queue(maxsize=2)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in ([first] if first is not None else []):
                ready.put(_prepare(chunk, twin, source, path))
            for chunk in rest:
                if stop.is_set():
                    return
                ready.put(_prepare(chunk, twin, source, path))
            ready.put(done)
        except BaseException as exc:  # handed to the consumer, which raises it in the import's thread
            ready.put(exc)

    worker = threading.Thread(target=produce, name="citytwin-import", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                ready.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


def _upsert(conn: Connection) -> tuple[int, int]:
    rows = conn.execute(text("""
        WITH latest AS (
            -- COPY fills the fresh temp table in file order, so the highest ctid is the last occurrence.
            SELECT DISTINCT ON (source_id) * FROM staging_buildings ORDER BY source_id, ctid DESC
        )
        INSERT INTO buildings AS b (source, source_id, footprint, ground_elevation, height, floors, use,
                                    year_built, attributes, lod2)
        SELECT source, source_id, footprint, ground_elevation, height, floors, use, year_built, attributes, lod2
        FROM latest
        ON CONFLICT (source, source_id) DO UPDATE SET
            footprint = EXCLUDED.footprint, ground_elevation = EXCLUDED.ground_elevation,
            height = EXCLUDED.height, floors = EXCLUDED.floors, use = EXCLUDED.use,
            year_built = EXCLUDED.year_built, attributes = EXCLUDED.attributes, lod2 = EXCLUDED.lod2
        RETURNING (xmax = 0) AS inserted
    """)).all()
    inserted = sum(1 for (flag,) in rows if flag)
    return inserted, len(rows) - inserted


def load_buildings(
    engine: Engine,
    chunks: Iterable,
    *,
    source: str,
    path: str,
    twin_name: str = "citytwin",
    on_progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Load building chunks (``citytwin.io.buildings.BuildingRead``) into the twin in one transaction.

    The first chunk fixes the twin's CRS if the twin is new (its own CRS if metric, else the local
    UTM zone); every chunk is reprojected into the twin's CRS before COPY.
    """
    summary = ImportSummary(kind="buildings", source=source, path=path)
    iterator = iter(chunks)
    with engine.begin() as conn:
        conn.execute(text("""
            CREATE TEMP TABLE staging_buildings (
                source text, source_id text, footprint geometry, ground_elevation double precision,
                height double precision, floors integer, use text, year_built integer,
                attributes jsonb, lod2 geometry) ON COMMIT DROP
        """))
        first = next((c for c in iterator if len(c.frame) or _note(summary, c)), None)
        if first is None:
            raise InputError(f"{path}: no valid buildings to import ({summary.rejected} rejected)",
                             details=summary.rejections[:20])
        _note(summary, first)
        twin = _twin_for(conn, first.crs, first.vertical_crs, first.frame, twin_name)
        summary.crs = twin.crs
        table_empty = conn.execute(text("SELECT NOT EXISTS (SELECT 1 FROM buildings)")).scalar()
        direct = table_empty or not conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM buildings WHERE source = :s)"), {"s": source}).scalar()
        if table_empty:
            _prepare_empty_table(conn)
        seen: set[str] = set()
        direct_rows = staged_rows = 0
        for prepared in _prepared_chunks(first, iterator, twin, source, path):
            if prepared.read is not first:
                _note(summary, prepared.read)
            if direct:
                ids = prepared.source_ids
                repeated = len(np.unique(ids)) != len(ids) or any(i in seen for i in ids)
                if repeated:
                    direct = False  # from here on through the upsert: later occurrences win
                else:
                    seen.update(ids)
            if direct:
                copy_payload(conn, "buildings", ROW_COLUMNS, prepared.payload)
                direct_rows += prepared.rows
            else:
                copy_payload(conn, "staging_buildings", ROW_COLUMNS, prepared.payload)
                staged_rows += prepared.rows
            if on_progress:
                on_progress(prepared.rows + len(prepared.read.rejected))
        summary.imported = direct_rows
        if table_empty:
            _restore_indexes(conn)  # before any upsert: ON CONFLICT needs the unique key
        if staged_rows:
            inserted, updated = _upsert(conn)
            summary.imported += inserted
            summary.updated = updated
            summary.duplicates = staged_rows - inserted - updated
        conn.execute(text("ANALYZE buildings"))
        log_import(conn, summary)
    return summary


def _prepare_empty_table(conn: Connection) -> None:
    """Loading into an empty table: build its indexes once at the end instead of row by row.

    TRUNCATE (allowed only when nothing references buildings) also lets COPY skip the WAL on a
    server with ``wal_level = minimal``, such as the embedded cluster.
    """
    referenced = conn.execute(text("SELECT EXISTS (SELECT 1 FROM outage_customers)")).scalar()
    if not referenced:
        conn.execute(text("TRUNCATE buildings CASCADE"))
    conn.execute(text("DROP INDEX IF EXISTS buildings_footprint_gist"))
    conn.execute(text("ALTER TABLE buildings DROP CONSTRAINT IF EXISTS buildings_source_source_id_key"))


def _restore_indexes(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE buildings ADD CONSTRAINT buildings_source_source_id_key UNIQUE (source, source_id)"))
    conn.execute(text("CREATE INDEX buildings_footprint_gist ON buildings USING gist (footprint)"))


def _note(summary: ImportSummary, chunk) -> bool:
    """Record a chunk's warnings and rejections; returns False (for use in a generator filter)."""
    summary.warnings.extend(chunk.warnings)
    summary.rejected += len(chunk.rejected)
    room = max(0, 1000 - len(summary.rejections))
    if room and len(chunk.rejected):
        rejected = chunk.rejected.astype(object).where(chunk.rejected.notna(), None)
        summary.rejections.extend(rejected.to_dict("records")[:room])
    return False


def log_import(conn: Connection, summary: ImportSummary) -> None:
    import json

    conn.execute(text("""
        INSERT INTO import_log (kind, source, path, imported, updated, rejected, details)
        VALUES (:kind, :source, :path, :imported, :updated, :rejected, CAST(:details AS jsonb))
    """), {"kind": summary.kind, "source": summary.source, "path": summary.path,
           "imported": summary.imported, "updated": summary.updated, "rejected": summary.rejected,
           "details": json.dumps({"warnings": summary.warnings[:50], "duplicates": summary.duplicates})})
