"""Loading buildings into the twin: one transaction per import, COPY, and an upsert where needed.

A new source is COPYed straight into ``buildings``; re-importing a source (or a file that repeats a
building id) goes through a staging table and one upsert keyed on ``(source, source_id)``, so rows
are updated in place instead of duplicated (last occurrence wins). Reading and serialising the next
chunk runs ahead of the COPY, in a forked process where possible (``citytwin.db.prepare_ahead``),
while the database ingests the current one. Any error rolls the whole import back: the database is
never half-written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

from sqlalchemy import Connection, Engine, text

from citytwin.db.building_rows import ROW_COLUMNS, TwinCRS
from citytwin.db.copy import copy_payload
from citytwin.db.prepare_ahead import open_feed
from citytwin.db.twin import Twin, get_twin, init_twin
from citytwin.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import geopandas as gpd
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


def _twin_for(conn: Connection, crs: str | None, vertical_crs: str | None, frame: "gpd.GeoDataFrame",
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
    prepare_in_process: bool | None = None,
) -> ImportSummary:
    """Load building chunks (``citytwin.io.buildings.BuildingRead``) into the twin in one transaction.

    The first chunk fixes the twin's CRS if the twin is new (its own CRS if metric, else the local
    UTM zone); every chunk is reprojected into the twin's CRS before COPY. ``prepare_in_process``
    chooses where chunks are read and serialised (None: a forked process where the OS allows it,
    see ``citytwin.db.prepare_ahead``); the result is the same either way.
    """
    summary = ImportSummary(kind="buildings", source=source, path=path)
    feed = open_feed(chunks, source=source, path=path, in_process=prepare_in_process)
    try:
        with engine.begin() as conn:
            _load(conn, feed, summary, twin_name, on_progress)
    finally:
        feed.close()
    return summary


def _load(conn: Connection, feed, summary: ImportSummary, twin_name: str,
          on_progress: Callable[[int], None] | None) -> None:
    """The body of ``load_buildings`` inside its transaction."""
    source, path = summary.source, summary.path
    conn.execute(text("""
        CREATE TEMP TABLE staging_buildings (
            source text, source_id text, footprint geometry, ground_elevation double precision,
            height double precision, floors integer, use text, year_built integer,
            attributes jsonb, lod2 geometry) ON COMMIT DROP
    """))
    first = feed.first(lambda chunk: _note(summary, chunk))
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
    for number, prepared in enumerate(feed.prepared(TwinCRS(twin.crs, twin.srid))):
        if number:  # the first chunk's warnings and rejections are already noted
            _note(summary, prepared.read)
        if direct:
            ids = set(prepared.source_ids)
            if len(ids) != len(prepared.source_ids) or not seen.isdisjoint(ids):
                direct = False  # from here on through the upsert: later occurrences win
            else:
                seen |= ids
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


def _prepare_empty_table(conn: Connection) -> None:
    """Loading into an empty table: build its secondary indexes once at the end instead of row by row
    (the primary key stays: other tables reference it).

    TRUNCATE (allowed only when nothing references buildings) also lets COPY skip the WAL on a
    server with ``wal_level = minimal``, such as the embedded cluster.
    """
    referenced = conn.execute(text("SELECT EXISTS (SELECT 1 FROM outage_customers)")).scalar()
    if not referenced:
        conn.execute(text("TRUNCATE buildings CASCADE"))
    conn.execute(text("DROP INDEX IF EXISTS buildings_footprint_gist"))
    conn.execute(text("DROP INDEX IF EXISTS buildings_use_idx"))
    conn.execute(text("ALTER TABLE buildings DROP CONSTRAINT IF EXISTS buildings_source_source_id_key"))


def _restore_indexes(conn: Connection) -> None:
    """The indexes ``_prepare_empty_table`` dropped, as the schema defines them. Index builds sort in
    ``maintenance_work_mem``; servers default to 64 MB, which spills a million footprints to disk,
    so this transaction gets at least 256 MB (the embedded cluster's setting)."""
    conn.execute(text("SELECT set_config('maintenance_work_mem', '256MB', true) "
                      "WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes('256MB')"))
    conn.execute(text("ALTER TABLE buildings ADD CONSTRAINT buildings_source_source_id_key UNIQUE (source, source_id)"))
    conn.execute(text("CREATE INDEX buildings_footprint_gist ON buildings USING gist (footprint)"))
    conn.execute(text("CREATE INDEX buildings_use_idx ON buildings (use)"))


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
