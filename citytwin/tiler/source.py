"""Buildings from the twin's PostGIS database, in spatial chunks, into the tiler.

The driver reads only one point per building (the centre of its footprint's bounding box) to build the
tile tree; each work unit then reads its own buildings by id, with the scenario results joined, inside the
Dask task. So the driver never holds geometry, and each worker holds one unit (~20,000 buildings) at a time.

SQL lives in small functions with bound parameters; result column names come from a fixed list.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, create_engine, text

from citytwin.errors import InputError
from citytwin.tiler.build import (
    BuildResult, BuildSettings, _georef, _workers, finish, partition_rows, run_units, staging_dir,
)
from citytwin.tiler.metadata import BUILDING_PROPERTIES, RESULT_PROPERTIES
from citytwin.tiler.tree import build_tree, partition_leaves

RESULT_COLUMNS = tuple(p.name for p in RESULT_PROPERTIES)
POINT_BATCH = 50_000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_tileset_name(name: str) -> str:
    """Tileset names become directory names and URL segments: letters, digits, ``_ . -``; no ``..``."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise InputError(f"invalid tileset name {name!r}: use 1-64 letters, digits, '_', '.', '-' "
                         f"(starting with a letter or digit, no '..')")
    return name


def read_points(conn: Connection) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids and bounding-box centres (twin CRS) of every drawable building, streamed in batches."""
    result = conn.execution_options(stream_results=True, max_row_buffer=POINT_BATCH).execute(text("""
        SELECT id,
               (ST_XMin(footprint) + ST_XMax(footprint)) / 2 AS x,
               (ST_YMin(footprint) + ST_YMax(footprint)) / 2 AS y
        FROM buildings
        WHERE height > 0 AND NOT ST_IsEmpty(footprint)
        ORDER BY id
    """))
    ids, xs, ys = [], [], []
    for rows in result.partitions(POINT_BATCH):
        # Columns via zip: numpy probing SQLAlchemy Row objects one by one is ~50x slower.
        batch_ids, batch_x, batch_y = zip(*rows)
        ids.append(np.fromiter(batch_ids, dtype=np.int64, count=len(rows)))
        xs.append(np.fromiter(batch_x, dtype=np.float64, count=len(rows)))
        ys.append(np.fromiter(batch_y, dtype=np.float64, count=len(rows)))
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(ids), np.concatenate(xs), np.concatenate(ys)


def resolve_runs(conn: Connection, run_ids: list[int] | None) -> list[int]:
    """The runs whose results go into the tiles: the given ones, or every succeeded run with results."""
    if run_ids is not None:
        found = conn.execute(text("SELECT id FROM simulation_runs WHERE id = ANY(:ids)"),
                             {"ids": list(run_ids)}).scalars().all()
        unknown = sorted(set(run_ids) - set(found))
        if unknown:
            raise InputError(f"unknown simulation run id(s): {', '.join(map(str, unknown))}")
        return sorted(run_ids, reverse=True)
    return list(conn.execute(text("""
        SELECT r.id FROM simulation_runs r
        WHERE r.status = 'succeeded' AND EXISTS (SELECT 1 FROM building_results b WHERE b.run_id = r.id)
        ORDER BY r.id DESC
    """)).scalars())


def result_columns_present(conn: Connection, run_ids: list[int]) -> list[str]:
    """Result columns with at least one value in these runs (the others stay out of the tiles)."""
    if not run_ids:
        return []
    counts = ", ".join(f"count({c})" for c in RESULT_COLUMNS)
    row = conn.execute(text(f"SELECT {counts} FROM building_results WHERE run_id = ANY(:runs)"),
                       {"runs": run_ids}).one()
    return [c for c, n in zip(RESULT_COLUMNS, row) if n]


def _results_sql(columns: list[str]) -> str:
    # Latest run first: each column takes the newest non-null value among the chosen runs.
    picks = ",\n".join(
        f"(array_agg({c} ORDER BY run_id DESC) FILTER (WHERE {c} IS NOT NULL))[1] AS {c}" for c in columns)
    return f"""
        SELECT building_id, {picks}
        FROM building_results
        WHERE run_id = ANY(:runs) AND building_id = ANY(:ids)
        GROUP BY building_id
    """


def read_buildings(conn: Connection, ids: np.ndarray, run_ids: list[int], result_columns: list[str]
                   ) -> gpd.GeoDataFrame:
    """The buildings ``ids`` in that order, with the chosen results, as the tiler's frame."""
    unknown = [c for c in result_columns if c not in RESULT_COLUMNS]
    if unknown:
        raise InputError(f"unknown result column(s) {unknown}")
    res_select = "".join(f", res.{c}" for c in result_columns)
    res_join = (f"LEFT JOIN ({_results_sql(result_columns)}) res ON res.building_id = b.id"
                if result_columns else "")
    rows = conn.execute(text(f"""
        SELECT b.id, b.source_id, ST_AsBinary(b.footprint) AS footprint, b.ground_elevation, b.height,
               b.use, b.year_built, ST_AsBinary(b.lod2) AS lod2{res_select}
        FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY AS c(id, ord)
        JOIN buildings b ON b.id = c.id
        {res_join}
        ORDER BY c.ord
    """), {"ids": [int(i) for i in ids], "runs": run_ids}).all()
    columns = ["id", "source_id", "footprint", "ground_elevation", "height", "use", "year_built", "lod2",
               *result_columns]
    frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
    footprint = shapely.from_wkb(frame.pop("footprint").to_numpy(object))
    lod2 = frame.pop("lod2").to_numpy(object)
    has = np.array([v is not None for v in lod2])
    solids = np.full(len(frame), None, dtype=object)
    if has.any():
        solids[has] = shapely.from_wkb(np.array([bytes(v) for v in lod2[has]], dtype=object))
    frame["lod2"] = solids
    for c in ("ground_elevation", "height", *[c for c in result_columns if c != "outage_state"]):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    return gpd.GeoDataFrame(frame, geometry=footprint)


@lru_cache(maxsize=4)
def _engine(url: str) -> Engine:
    # One small pool per worker process and database.
    return create_engine(url, pool_size=2, max_overflow=0, pool_pre_ping=True)


@dataclass
class TwinSource:
    """A work unit's buildings, read inside the task.

    In process the caller's engine is used; on Dask only the URL crosses the process border and each
    worker keeps one small pool per database.
    """

    url: str
    ids: np.ndarray
    run_ids: list[int]
    result_columns: list[str]
    engine: Engine | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["engine"] = None  # engines hold sockets: never pickled
        return state

    def load(self) -> gpd.GeoDataFrame:
        engine = self.engine if self.engine is not None else _engine(self.url)
        with engine.connect() as conn:
            return read_buildings(conn, self.ids, self.run_ids, self.result_columns)


def build_from_twin(engine: Engine, out_dir: str | Path, name: str, client=None, *,
                    run_ids: list[int] | None = None, max_features_per_tile: int = 1000,
                    geoid: str = "auto", quantize: bool = True) -> BuildResult:
    """Build the tileset of the twin's buildings (with scenario results) into ``out_dir``.

    Parameters
    ----------
    engine
        The twin's database.
    out_dir
        Directory of the tileset (``out_dir/tileset.json``); replaced when the build completes.
    name
        The tileset's name.
    client
        A ``distributed.Client``; None builds in this process.
    run_ids
        Simulation runs whose per-building results to include (newest wins per value); default: every
        succeeded run with building results.
    max_features_per_tile, geoid, quantize
        As for :func:`citytwin.tiler.build_tileset`.
    """
    from citytwin.db.twin import require_twin

    started = time.perf_counter()
    with engine.connect() as conn:
        twin = require_twin(conn)
        georef = _georef(twin.crs, twin.vertical_crs, geoid)
        ids, x, y = read_points(conn)
        total, no_ground = conn.execute(text(
            "SELECT count(*), count(*) FILTER (WHERE ground_elevation IS NULL) FROM buildings")).one()
        skipped = int(total) - len(ids)
        runs = resolve_runs(conn, run_ids)
        result_columns = result_columns_present(conn, runs)
    if len(ids) == 0:
        raise InputError("the twin has no buildings to tile; import buildings first")
    properties = BUILDING_PROPERTIES + tuple(p for p in RESULT_PROPERTIES if p.name in result_columns)
    root = build_tree(x, y, max_features_per_tile)
    del x, y
    workers = _workers(client)
    groups = partition_leaves(root.leaves(), partition_rows(len(ids), workers, max_features_per_tile))
    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    settings = BuildSettings(str(staging), twin.crs, twin.vertical_crs, geoid, properties, quantize)
    url = engine.url.render_as_string(hide_password=False)

    def units():
        for group in groups:
            unit_ids = ids[np.concatenate([leaf.rows for leaf in group])]
            source = TwinSource(url, unit_ids, runs, result_columns, engine if client is None else None)
            yield source, [(leaf.address, len(leaf.rows)) for leaf in group]

    try:
        contents = run_units(client, units(), settings, window=2 * workers)
        extras = {"name": name, "buildings": int(len(ids)), "skipped": skipped,
                  "missing_ground_elevation": int(no_ground), "runs": runs, "georeference": georef.describe()}
        return finish(root, contents, staging, out_dir, name, extras, started, skipped, georef.warnings)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise


def build_tiles(engine: Engine, tiles_dir: str | Path, name: str = "buildings", client=None,
                **options) -> BuildResult:
    """What ``citytwin tiles build [--name NAME]`` runs: the twin's tileset into ``tiles_dir/name``."""
    check_tileset_name(name)
    return build_from_twin(engine, Path(tiles_dir) / name, name, client, **options)
