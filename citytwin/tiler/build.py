"""Build a 3D Tiles 1.1 tileset from buildings, in parallel on Dask, in bounded memory.

Plan: (1) one representative point per building -> kd-tree (:mod:`citytwin.tiler.tree`); (2) consecutive
leaves grouped into work units of ~20,000 buildings; (3) each unit is a Dask task that loads its buildings
(a slice of the frame, or a query against PostGIS), builds the meshes and property tables of its leaves,
writes content-hashed glb files (+ .gz) and returns only small :class:`LeafContent` records; (4) the driver
assembles tileset.json from the tree and those records. Tasks are submitted through a bounded window so no
more than a few units are in flight: memory stays flat however many buildings there are.

Output goes to a staging directory beside ``out_dir`` that replaces ``out_dir`` only when complete: a failed
build never leaves a half-written tileset behind. Dask workers write the tiles themselves, so on a cluster
spanning several machines ``out_dir`` must be on a filesystem they all share.
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Protocol

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from citytwin.errors import InputError
from citytwin.tiler import meshes
from citytwin.tiler.frames import GeoReference
from citytwin.tiler.glb import tile_glb
from citytwin.tiler.metadata import Property, encode_table, properties_for, schema
from citytwin.tiler.tileset import LeafContent, tileset_document, write_content, write_tileset
from citytwin.tiler.tree import Node, build_tree, partition_leaves

log = logging.getLogger("citytwin.tiler")

REQUIRED_COLUMNS = ("id", "geometry", "height")
MAX_PARTITION_ROWS = 20_000


@dataclass(frozen=True)
class BuildSettings:
    """What every task needs besides its buildings (small and picklable)."""

    staging: str
    crs: str
    vertical_crs: str | None
    geoid: str
    properties: tuple[Property, ...]
    quantize: bool = True


@dataclass
class BuildResult:
    """Summary of a finished build."""

    name: str
    path: Path
    buildings: int
    tiles: int
    bytes: int
    seconds: float
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def buildings_per_second(self) -> float:
        return self.buildings / self.seconds if self.seconds > 0 else float("nan")


class PartitionSource(Protocol):
    """Where a task gets its buildings: rows ordered leaf by leaf, with the columns of ``properties``."""

    def load(self) -> gpd.GeoDataFrame: ...


@dataclass
class FrameSource:
    frame: gpd.GeoDataFrame

    def load(self) -> gpd.GeoDataFrame:
        return self.frame


@lru_cache(maxsize=4)
def _georef(crs: str, vertical_crs: str | None, geoid: str) -> GeoReference:
    return GeoReference(crs, vertical_crs, geoid)


def _leaf_mesh(frame: gpd.GeoDataFrame, georef: GeoReference) -> meshes.TileMesh | None:
    ids = np.arange(len(frame))
    if "lod2" in frame.columns:
        lod2 = np.asarray(frame["lod2"].values, dtype=object)
        has_lod2 = np.array([g is not None and not (isinstance(g, float)) and not g.is_empty for g in lod2],
                            dtype=bool)
    else:
        lod2, has_lod2 = None, np.zeros(len(frame), dtype=bool)
    base = pd.to_numeric(frame["ground_elevation"], errors="coerce").to_numpy(np.float64, na_value=np.nan) \
        if "ground_elevation" in frame.columns else np.full(len(frame), np.nan)
    base = np.where(np.isfinite(base), base, 0.0)
    height = pd.to_numeric(frame["height"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    lod1 = ~has_lod2
    parts = [meshes.lod1_part(np.asarray(frame.geometry.values)[lod1], ids[lod1], base[lod1], height[lod1],
                              georef)]
    if has_lod2.any():
        parts.append(meshes.lod2_part(lod2[has_lod2], ids[has_lod2], georef))
    return meshes.assemble(parts)


def build_partition(source: PartitionSource, leaves: list[tuple[str, int]], settings: BuildSettings
                    ) -> list[LeafContent]:
    """Build and write the leaves of one work unit; ``leaves`` are (address, number of rows) in order."""
    frame = source.load()
    georef = _georef(settings.crs, settings.vertical_crs, settings.geoid)
    staging = Path(settings.staging)
    doc_schema = schema(settings.properties)
    out: list[LeafContent] = []
    start = 0
    for address, count in leaves:
        sub = frame.iloc[start:start + count]
        start += count
        mesh = _leaf_mesh(sub, georef)
        if mesh is None:
            continue
        table = encode_table(sub, settings.properties)
        data = tile_glb(mesh, len(sub), table, doc_schema, quantize=settings.quantize)
        uri = write_content(staging, data)
        out.append(LeafContent(address, uri, mesh.region, mesh.frame.transform(), len(sub), len(data)))
    return out


def _usable(frame: gpd.GeoDataFrame) -> np.ndarray:
    """Rows that can be drawn: a non-empty footprint and a positive height (LoD2 solids need them too)."""
    geom = frame.geometry.values
    height = pd.to_numeric(frame["height"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    ok = ~(shapely.is_missing(geom) | shapely.is_empty(geom)) & np.isfinite(height) & (height > 0)
    return ok


def check_frame(buildings: gpd.GeoDataFrame, crs: str) -> None:
    if not isinstance(buildings, gpd.GeoDataFrame):
        raise InputError("buildings must be a GeoDataFrame")
    missing = [c for c in REQUIRED_COLUMNS if c not in buildings.columns and c != "geometry"]
    if missing:
        raise InputError(f"buildings lack the column(s) {', '.join(missing)}")
    if buildings.crs is not None:
        from pyproj import CRS

        given = CRS.from_user_input(crs)
        horizontal = given.sub_crs_list[0] if given.is_compound else given
        if not buildings.crs.equals(horizontal) and not buildings.crs.equals(given):
            raise InputError(f"the buildings are in {buildings.crs.to_string()}, not in {crs}")
    if buildings["id"].duplicated().any():
        dup = buildings.loc[buildings["id"].duplicated(), "id"].iloc[0]
        raise InputError(f"building ids must be unique; id {dup} occurs more than once")


def representative_points(geometry) -> tuple[np.ndarray, np.ndarray]:
    """Centre of each geometry's bounding box (cheap, and good enough to sort buildings into tiles)."""
    bounds = shapely.bounds(np.asarray(geometry))
    return (bounds[:, 0] + bounds[:, 2]) / 2.0, (bounds[:, 1] + bounds[:, 3]) / 2.0


def partition_rows(n: int, workers: int, max_features: int) -> int:
    """Units small enough to balance ``workers`` (4 units each) but not smaller than one tile."""
    return int(min(MAX_PARTITION_ROWS, max(max_features, n // max(1, 4 * workers))))


def _workers(client) -> int:
    if client is None:
        return 1
    try:
        return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    except TypeError:  # older distributed: no n_workers argument
        return max(1, len(client.scheduler_info()["workers"]))


def run_units(client, units: Iterable[tuple[PartitionSource, list[tuple[str, int]]]], settings: BuildSettings,
              window: int) -> list[LeafContent]:
    """Run the work units in process (no client) or on Dask with at most ``window`` units in flight."""
    results: list[LeafContent] = []
    if client is None:
        for source, leaves in units:
            results.extend(build_partition(source, leaves, settings))
        return results
    from distributed import as_completed

    pending = iter(units)
    futures = as_completed()
    for _ in range(window):
        unit = next(pending, None)
        if unit is None:
            break
        futures.add(client.submit(build_partition, unit[0], unit[1], settings, pure=False))
    for future in futures:
        results.extend(future.result())
        future.release()
        unit = next(pending, None)
        if unit is not None:
            futures.add(client.submit(build_partition, unit[0], unit[1], settings, pure=False))
    return results


def staging_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    path = out_dir.parent / f".{out_dir.name}.building-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def publish(staging: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished ``staging`` directory (two renames; the old one is removed)."""
    out_dir = Path(out_dir)
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def finish(root: Node, contents: list[LeafContent], staging: Path, out_dir: Path, name: str, extras: dict,
           started: float, skipped: int, warnings: list[str]) -> BuildResult:
    by_address = {c.address: c for c in contents}
    document = tileset_document(root, by_address, extras)
    write_tileset(staging, document)
    publish(staging, out_dir)
    return BuildResult(
        name=name, path=Path(out_dir) / "tileset.json", buildings=sum(c.features for c in contents),
        tiles=len(contents), bytes=sum(c.bytes for c in contents), seconds=time.perf_counter() - started,
        skipped=skipped, warnings=warnings,
    )


def build_tileset(
    buildings: gpd.GeoDataFrame,
    out_dir: str | Path,
    *,
    crs: str,
    vertical_crs: str | None = None,
    name: str,
    max_features_per_tile: int = 1000,
    client=None,
    geoid: str = "auto",
    quantize: bool = True,
) -> BuildResult:
    """Build the 3D Tiles 1.1 tileset of ``buildings`` into ``out_dir`` (``out_dir/tileset.json``).

    Parameters
    ----------
    buildings
        Columns ``id``, ``geometry`` (footprint, (Multi)Polygon in ``crs``), ``height`` (m above ground) and
        optionally ``source_id``, ``ground_elevation`` (m, orthometric; missing -> 0), ``use``,
        ``year_built``, ``lod2`` (MultiPolygon Z, absolute orthometric heights; drawn instead of the
        extrusion) and result columns (``max_depth_m``, ``annual_kwh``, ``peak_kw``, ``outage_state``, ...).
    crs, vertical_crs
        The CRS of the coordinates and of the heights (e.g. ``"EPSG:28992"`` and ``"EPSG:5709"``).
    name
        The tileset's name (recorded in its extras; the directory name is the caller's choice).
    max_features_per_tile
        Upper bound of buildings per tile.
    client
        A ``distributed.Client``; None builds in this process.
    geoid
        Height model policy, see :class:`citytwin.tiler.frames.GeoReference`.
    quantize
        Store positions and normals with KHR_mesh_quantization (half the bytes; every current CesiumJS
        reads it); False writes plain floats for clients without the extension.
    """
    started = time.perf_counter()
    check_frame(buildings, crs)
    georef = _georef(crs, vertical_crs, geoid)  # fails early on a bad CRS or a missing geoid model
    usable = _usable(buildings)
    skipped = int((~usable).sum())
    frame = buildings.loc[usable]
    if len(frame) == 0:
        raise InputError(f"no buildings to tile ({skipped} without a footprint or a positive height)")
    frame = frame.reset_index(drop=True)
    properties = properties_for(frame.columns)
    x, y = representative_points(frame.geometry.values)
    root = build_tree(x, y, max_features_per_tile)
    leaves = root.leaves()
    groups = partition_leaves(leaves, partition_rows(len(frame), _workers(client), max_features_per_tile))
    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    keep = [c for c in frame.columns if c in {p.name for p in properties} | {"geometry", "lod2"}]
    settings = BuildSettings(str(staging), crs, vertical_crs, geoid, properties, quantize)

    def units():
        for group in groups:
            rows = np.concatenate([leaf.rows for leaf in group])
            sub = frame.iloc[rows][keep].reset_index(drop=True)
            yield FrameSource(sub), [(leaf.address, len(leaf.rows)) for leaf in group]

    try:
        contents = run_units(client, units(), settings, window=2 * _workers(client))
        extras = _extras(name, georef, len(frame), skipped, frame)
        return finish(root, contents, staging, out_dir, name, extras, started, skipped, georef.warnings)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _extras(name: str, georef: GeoReference, buildings: int, skipped: int, frame: pd.DataFrame) -> dict:
    missing_ground = int(frame["ground_elevation"].isna().sum()) if "ground_elevation" in frame else buildings
    return {
        "name": name,
        "buildings": buildings,
        "skipped": skipped,
        "missing_ground_elevation": missing_ground,
        "georeference": georef.describe(),
    }
