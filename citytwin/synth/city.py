"""``generate_city``: the whole synthetic city as standard files, deterministic in (size, seed).

Files written to ``out_dir`` (names in ``city.json``):

``buildings.gpkg``  layer ``buildings``: source_id, height, floors, use, year_built, ground_elevation,
                    district (the block's district: suburb, inner, downtown, industrial; an import
                    keeps it in ``attributes``, where the twin graph's "liesIn" edge reads it)
                    and the footprint polygon in the city's metric CRS;
``dem.tif``         float32 GeoTIFF, nodata -9999, with the river valley and low-lying districts;
``grid.gpkg``       the grid (:mod:`citytwin.io.grid_gpkg`), one service point per building;
``sensors.gpkg``    layer ``sensors``, one point per datastream;
``buildings.parquet`` (optional) GeoParquet 1.0 copy of the buildings;
``city.json``       the manifest, written last: its presence means the city is complete.

Memory stays bounded whatever the size: the plan is per block (:mod:`.layout`), buildings and the
distribution grid are made one chunk of block rows at a time and spooled to Arrow IPC files, and
each GeoPackage layer is then written in one GDAL session. Randomness comes from streams keyed by
``(seed, purpose, row)``, so outputs do not depend on the chunk size; with ``last_change`` of the
GeoPackages fixed (see :func:`citytwin.io.grid_gpkg.gpkg_last_change`) equal inputs give
byte-identical files.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from citytwin.errors import InputError
from citytwin.io.grid_gpkg import GpkgSpool, GridGpkgWriter, LayerSpec
from citytwin.synth import layout as L
from citytwin.synth.buildings import BuildingRows, block_row_buildings
from citytwin.synth.distribution import distribution_grid
from citytwin.synth.feeders import backbone_tables, plan_feeders
from citytwin.synth.gridparts import numbered
from citytwin.synth.sensors import SENSOR_SCHEMA, MeterSample, sensor_table
from citytwin.synth.terrain import DEM_NODATA, RIVER_GRADIENT, DemGrid, Terrain, write_dem

CITY_NAME = "synth-city"
# Where the city lies: the Upper Rhine plain around 48.4 N 7.8 E (UTM zone 32N).
CENTRE_LON, CENTRE_LAT = 7.8, 48.4
FILES = {"buildings": "buildings.gpkg", "dem": "dem.tif", "grid": "grid.gpkg", "sensors": "sensors.gpkg"}
PARQUET = "buildings.parquet"
CHUNK_BUILDINGS = 50_000
BUILDING_SCHEMA = pa.schema([
    ("source_id", pa.string()), ("height", pa.float64()), ("floors", pa.int64()), ("use", pa.string()),
    ("year_built", pa.int64()), ("ground_elevation", pa.float64()), ("district", pa.string()),
    ("geometry", pa.binary()),
])


def city_origin(crs: str, width: float, height: float) -> tuple[float, float]:
    """World position (m) of the local origin so the city is centred on 48.4 N 7.8 E, on whole km.

    Raises
    ------
    InputError
        If ``crs`` is unknown, not projected in metres, or cannot place that point.
    """
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        parsed = CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(f"unknown CRS {crs!r}: {exc}") from exc
    units = {axis.unit_name for axis in parsed.axis_info}
    if not parsed.is_projected or not units <= {"metre", "meter"}:
        raise InputError(f"the synthetic city needs a projected CRS in metres (e.g. EPSG:32632); got {crs!r}")
    x, y = Transformer.from_crs("EPSG:4326", parsed, always_xy=True).transform(CENTRE_LON, CENTRE_LAT)
    if not (np.isfinite(x) and np.isfinite(y)):
        raise InputError(f"{crs!r} cannot represent the city's location ({CENTRE_LAT} N {CENTRE_LON} E)")
    return float(round((x - width / 2) / 1000.0) * 1000.0), float(round((y - height / 2) / 1000.0) * 1000.0)


def _row_chunks(layout: L.CityLayout, target: int) -> list[range]:
    """Consecutive block rows grouped so each group holds about ``target`` buildings."""
    per_row = layout.buildings.reshape(layout.nrows, layout.ncols).sum(axis=1)
    chunks, start, count = [], 0, 0
    for row, n in enumerate(per_row):
        count += int(n)
        if count >= target:
            chunks.append(range(start, row + 1))
            start, count = row + 1, 0
    if start < layout.nrows:
        chunks.append(range(start, layout.nrows))
    return chunks


def _building_table(rows: BuildingRows, origin: tuple[float, float]) -> pa.Table:
    world = shapely.transform(rows.footprint, lambda xy: xy + np.asarray(origin))
    return pa.Table.from_arrays([
        numbered("B", rows.index + 1, 7), pa.array(rows.height), pa.array(rows.floors),
        pa.array(L.USES).take(pa.array(rows.use.astype(np.int64))), pa.array(rows.year_built),
        pa.array(rows.ground_elevation.astype(np.float64)),
        pa.array(L.DISTRICTS).take(pa.array(rows.district.astype(np.int64))),
        pa.array(shapely.to_wkb(world), type=pa.binary()),
    ], schema=BUILDING_SCHEMA)


class _Tally:
    """Counts accumulated over the chunks for the manifest."""

    def __init__(self, n_feeders: int) -> None:
        self.feeder_peak = np.zeros(n_feeders)
        self.uses = np.zeros(len(L.USES), dtype=np.int64)
        self.customers = 0
        self.transformers = 0
        self.load_mw = 0.0
        self.floor_area_m2 = 0.0

    def add(self, rows: BuildingRows, grid) -> None:
        self.feeder_peak += grid.feeder_peak_mw
        self.uses += np.bincount(rows.use, minlength=len(L.USES))
        nodes = grid.tables["nodes"]
        self.customers += int(pc.sum(nodes.column("customers")).as_py() or 0)
        self.load_mw += float(pc.sum(nodes.column("load_mw")).as_py() or 0.0)
        self.transformers += grid.transformers
        self.floor_area_m2 += float(np.sum(rows.area * rows.floors))


def generate_city(n_buildings: int, seed: int, out_dir: Path | str, crs: str = "EPSG:32632", *,
                  parquet: bool = False, chunk_buildings: int = CHUNK_BUILDINGS) -> dict:
    """Generate the synthetic city into ``out_dir`` and return its manifest (plus run facts).

    Parameters
    ----------
    n_buildings : int
        Exactly this many buildings (1 to 9,999,999).
    seed : int
        Seed of every random choice; the same (n_buildings, seed, crs) gives the same files.
    out_dir : path
        Folder for the files (created; files of an earlier city there are replaced).
    crs : str
        A projected CRS in metres; the city is placed around 48.4 N 7.8 E in it.
    parquet : bool
        Also write ``buildings.parquet`` (GeoParquet).
    chunk_buildings : int
        Buildings per chunk; bounds memory, does not change the output.

    Raises
    ------
    InputError
        For a bad size, seed or CRS.
    """
    started = time.perf_counter()
    layout = L.plan_city(n_buildings, seed)
    origin = city_origin(crs, layout.width, layout.height)
    terrain = Terrain.for_city(layout.river, layout.width, layout.height, np.random.default_rng([seed, 1]))
    dem = DemGrid.covering(layout.width, layout.height)
    plan = plan_feeders(layout)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "city.json"
    manifest_path.unlink(missing_ok=True)   # the files below no longer match an older manifest

    write_dem(out / FILES["dem"], terrain, dem, origin, crs)
    tally = _Tally(plan.n_feeders)
    meters = MeterSample.for_city(layout.n_buildings)
    with contextlib.ExitStack() as stack:
        buildings = stack.enter_context(GpkgSpool(out / FILES["buildings"],
                                                  {"buildings": LayerSpec(BUILDING_SCHEMA, "Polygon")}, crs))
        grid = stack.enter_context(GridGpkgWriter(out / FILES["grid"], crs, name=f"{CITY_NAME}-grid"))
        geoparquet = stack.enter_context(_GeoParquet(out / PARQUET, crs)) if parquet else None
        for rows_range in _row_chunks(layout, max(1, chunk_buildings)):
            # Grid parts per block row, so the order of grid rows does not depend on the chunk size.
            per_row = [block_row_buildings(layout, r, terrain, dem) for r in rows_range]
            per_row = [rows for rows in per_row if len(rows)]
            if not per_row:
                continue
            parts = [distribution_grid(layout, plan, rows, origin) for rows in per_row]
            rows = BuildingRows.concat(per_row)
            table = _building_table(rows, origin)
            buildings.append("buildings", table)
            if geoparquet is not None:
                geoparquet.write(table)
            for name in parts[0].tables:
                grid.append(name, pa.concat_tables([part.tables[name] for part in parts]))
            for part, row_rows in zip(parts, per_row):
                tally.add(row_rows, part)
            meters.add(rows.meter_draw < meters.share, pa.concat_arrays([p.service_point_ids for p in parts]),
                       table.column("source_id").combine_chunks(),
                       origin[0] + rows.front_x, origin[1] + rows.front_y)
        backbone = backbone_tables(layout, plan, origin, tally.feeder_peak, np.random.default_rng([seed, 3]))
        for name, t in backbone.items():
            grid.append(name, t)
        counts_grid = dict(grid.rows)

    sensors = sensor_table(layout, plan, meters, origin)
    with GpkgSpool(out / FILES["sensors"], {"sensors": LayerSpec(SENSOR_SCHEMA, "Point")}, crs) as spool:
        spool.append("sensors", sensors)

    manifest = _manifest(layout, plan, dem, origin, crs, tally, counts_grid, sensors, meters, parquet)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest | {"out_dir": str(out), "seconds": round(time.perf_counter() - started, 1)}


def _manifest(layout, plan, dem: DemGrid, origin, crs, tally: _Tally, counts_grid: dict, sensors: pa.Table,
              meters: MeterSample, parquet: bool) -> dict:
    xmin, ymin, xmax, ymax = dem.bounds
    kinds = sensors.column("kind").to_pylist()
    files = dict(FILES) | ({"buildings_parquet": PARQUET} if parquet else {})
    river = layout.river
    return {
        "name": CITY_NAME,
        "generator": "citytwin.synth",
        "format_version": 1,
        "crs": crs,
        "seed": layout.seed,
        "origin": [origin[0], origin[1]],
        "bounds": [origin[0] + xmin, origin[1] + ymin, origin[0] + xmax, origin[1] + ymax],
        "files": files,
        "counts": {
            "buildings": layout.n_buildings,
            "blocks": int((layout.buildings > 0).sum()),
            "substations": len(plan.sub_id),
            "feeders": plan.n_feeders,
            "transformers": tally.transformers,
            "service_points": layout.n_buildings,
            "customers": tally.customers,
            "nodes": counts_grid["nodes"],
            "sections": counts_grid["sections"],
            "switches": counts_grid["switches"],
            "connections": counts_grid["connections"],
            "datastreams": sensors.num_rows,
            "things": len(set(sensors.column("thing_id").to_pylist())),
            "meters": len(meters.node_ids),
            "weather_stations": len({t for t, k in zip(sensors.column("thing_id").to_pylist(), kinds)
                                     if k == "weather"}),
            "river_gauges": kinds.count("river_level"),
        },
        "uses": {use: int(n) for use, n in zip(L.USES, tally.uses)},
        "districts": {name: int(layout.buildings[layout.district == d].sum())
                      for d, name in enumerate(L.DISTRICTS) if d != L.WATER},
        "energy": {"floor_area_m2": round(tally.floor_area_m2), "average_load_mw": round(tally.load_mw, 3),
                   "feeder_peak_sum_mw": round(float(tally.feeder_peak.sum()), 3)},
        "dem": {"cell_size_m": dem.cell, "width": dem.width, "height": dem.height, "nodata": DEM_NODATA},
        "river": {"water_level_m_west": round(river.level0, 3), "gradient_m_per_m": RIVER_GRADIENT,
                  "channel_width_m": round(2 * river.half_width, 1),
                  "floodplain_width_m": round(2 * river.floodplain, 1)},
    }


class _GeoParquet:
    """GeoParquet 1.0 writer for the building chunks (WKB geometry, CRS as PROJJSON)."""

    ROW_GROUP = 65_536

    def __init__(self, path: Path, crs: str) -> None:
        import pyarrow.parquet as pq
        from pyproj import CRS

        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        geo = {"version": "1.0.0", "primary_column": "geometry",
               "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"],
                                        "crs": CRS.from_user_input(crs).to_json_dict()}}}
        schema = BUILDING_SCHEMA.with_metadata({b"geo": json.dumps(geo).encode()})
        self.writer = pq.ParquetWriter(str(self.partial), schema, compression="zstd")
        self.schema = schema
        self.pending: list[pa.Table] = []
        self.buffered = 0

    def write(self, table: pa.Table) -> None:
        """Buffer rows and write them in fixed-size row groups (the file must not depend on chunking)."""
        self.pending.append(table.replace_schema_metadata(self.schema.metadata))
        self.buffered += table.num_rows
        while self.buffered >= self.ROW_GROUP:
            self._flush(self.ROW_GROUP)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self.pending)
        self.writer.write_table(table.slice(0, rows).combine_chunks(), row_group_size=rows)
        rest = table.slice(rows)
        self.pending = [rest] if rest.num_rows else []
        self.buffered -= rows

    def __enter__(self) -> "_GeoParquet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.buffered:
            self._flush(self.buffered)
        self.writer.close()
        if exc_type is None:
            self.partial.replace(self.path)
        else:
            self.partial.unlink(missing_ok=True)
