"""Flood maps for the web map: a run's depths as transparent-to-blue PNGs over a CRS84 rectangle.

``GET /api/runs``                                  recent simulation runs (newest first), with ``has_flood``
``GET /api/runs/{run_id}/flood``                   times, bounds and image URLs of a run's flood result
``GET /api/runs/{run_id}/flood/max.png``           maximum depth over the run
``GET /api/runs/{run_id}/flood/depth/{i}.png``     depth at output time ``i``

The run's NetCDF (``simulation_runs.result_path``; for a storm scenario the flood run it names) holds
``depth(time, y, x)`` and ``max_depth(y, x)`` in metres with its CRS in a CF ``spatial_ref`` variable
(rioxarray). Each frame is warped to EPSG:4326 (plate carrée, which is what Cesium's
``SingleTileImageryProvider`` stretches linearly over its rectangle) and coloured on one fixed scale
(``DEPTH_STOPS``) so that frames and runs compare. Images are cached beside the NetCDF in
``<stem>_map/`` and rebuilt when the NetCDF changes; image URLs carry a version token so browsers may
cache them for good.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import text

from citytwin.api.auth import require_scope
from citytwin.errors import InputError, NotFoundError

router = APIRouter(prefix="/api/runs", tags=["Flood maps"], dependencies=[require_scope("read", for_read=True)])

# Depth (m) -> RGBA. Bands follow common flood-hazard depth classes (ankle, knee, waist, chest, head height);
# between stops colours are interpolated linearly, above the last the last colour holds.
DEPTH_STOPS: tuple[tuple[float, tuple[int, int, int, int]], ...] = (
    (0.02, (198, 233, 255, 110)),
    (0.15, (130, 196, 244, 160)),
    (0.30, (66, 146, 222, 190)),
    (0.60, (33, 102, 196, 210)),
    (1.20, (16, 60, 150, 225)),
    (2.00, (8, 29, 88, 235)),
)
MIN_VISIBLE_DEPTH_M = DEPTH_STOPS[0][0]  # shallower water is drawn transparent
MAX_IMAGE_SIDE = 2048  # px; larger grids are reduced (max depth per output pixel) to stay within GPU limits
IMMUTABLE = "public, max-age=31536000, immutable"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


# --- colour and PNG ------------------------------------------------------------------------------------------

def colour_depths(depth: np.ndarray) -> np.ndarray:
    """RGBA uint8 image of a depth grid (m): transparent where dry, NaN or below ``MIN_VISIBLE_DEPTH_M``."""
    depth = np.asarray(depth, dtype=np.float64)
    levels = np.array([s[0] for s in DEPTH_STOPS])
    colours = np.array([s[1] for s in DEPTH_STOPS], dtype=np.float64)
    wet = np.isfinite(depth) & (depth >= MIN_VISIBLE_DEPTH_M)
    rgba = np.zeros(depth.shape + (4,), dtype=np.uint8)
    values = np.clip(depth[wet], levels[0], levels[-1])
    for channel in range(4):
        rgba[..., channel][wet] = np.rint(np.interp(values, levels, colours[:, channel])).astype(np.uint8)
    return rgba


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(rgba: np.ndarray) -> bytes:
    """A truecolour-with-alpha, 8-bit PNG (PNG spec, ISO/IEC 15948: IHDR colour type 6, filter 0 per row)."""
    height, width, channels = rgba.shape
    if channels != 4:
        raise ValueError("encode_png needs an (h, w, 4) array")
    rows = np.concatenate([np.zeros((height, 1), np.uint8), np.ascontiguousarray(rgba, np.uint8).reshape(height, -1)],
                          axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


# --- runs and their flood results ----------------------------------------------------------------------------

def _run_row(conn, run_id: int) -> dict:
    row = conn.execute(text("SELECT id, kind, status, result_path, summary FROM simulation_runs WHERE id = :id"),
                       {"id": run_id}).mappings().first()
    if row is None:
        raise NotFoundError(f"no simulation run {run_id}")
    return dict(row)


def flood_result_path(conn, run_id: int) -> tuple[int, Path]:
    """The flood run id and NetCDF path behind ``run_id`` (a flood run, or a scenario naming one)."""
    row = _run_row(conn, run_id)
    summary = row["summary"] or {}
    candidates = [row["result_path"], summary.get("flood_result_path"), summary.get("result_path")]
    for candidate in candidates:
        if candidate and str(candidate).endswith(".nc") and Path(candidate).is_file():
            return run_id, Path(candidate)
    flood_run = summary.get("flood_run_id")
    if flood_run is not None and int(flood_run) != run_id:
        return flood_result_path(conn, int(flood_run))
    if row["status"] in ("queued", "running"):
        raise NotFoundError(f"run {run_id} is still {row['status']}; its flood map appears when it succeeds")
    raise NotFoundError(f"run {run_id} ({row['kind']}, {row['status']}) has no flood result on disk")


@dataclass
class FloodMap:
    """A flood result prepared for the map: cache directory, times (s), CRS84 bounds, version token."""

    run_id: int
    source: Path
    cache: Path
    times: list[float]
    bounds: list[float]
    max_depth_m: float
    version: str


def _lock_for(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _open_dataset(path: Path):
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    try:
        ds = xr.open_dataset(path, decode_coords="all")
    except (OSError, ValueError) as exc:
        raise InputError(f"flood result {path} cannot be read: {exc}") from exc
    missing = {"depth", "max_depth"} - set(ds.data_vars)
    if missing:
        ds.close()
        raise InputError(f"flood result {path} lacks variable(s) {sorted(missing)}")
    if ds.rio.crs is None:
        ds.close()
        raise InputError(f"flood result {path} declares no CRS, so it cannot be placed on the map")
    return ds


def _to_crs84(grid, shape: tuple[int, int] | None):
    """One (y, x) depth grid warped to EPSG:4326; reduced by max when the output is smaller than the input."""
    from rasterio.enums import Resampling

    grid = grid.astype("float32").rio.write_nodata(np.nan, encoded=False)
    if shape is None:
        return grid.rio.reproject("EPSG:4326", resampling=Resampling.nearest)
    return grid.rio.reproject("EPSG:4326", shape=shape, resampling=Resampling.max)


def _output_shape(ds) -> tuple[int, int] | None:
    ny, nx = ds.rio.height, ds.rio.width
    side = max(ny, nx)
    if side <= MAX_IMAGE_SIDE:
        return None
    scale = MAX_IMAGE_SIDE / side
    return max(1, int(ny * scale)), max(1, int(nx * scale))


def prepare(run_id: int, source: Path) -> FloodMap:
    """Metadata (and ``max.png``) of a flood result, from the cache when the NetCDF is unchanged."""
    st = source.stat()
    stamp = f"{st.st_size}-{st.st_mtime_ns}"
    version = hashlib.sha1(f"{source}:{stamp}".encode()).hexdigest()[:12]
    cache = source.with_name(f"{source.stem}_map")
    meta_path = cache / "meta.json"
    with _lock_for(cache):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = None
        if meta is None or meta.get("stamp") != stamp or not (cache / "max.png").is_file():
            cache.mkdir(exist_ok=True)
            for old in cache.glob("*.png"):
                old.unlink(missing_ok=True)
            ds = _open_dataset(source)
            try:
                warped = _to_crs84(ds["max_depth"], _output_shape(ds))
                w, s, e, n = (float(v) for v in warped.rio.bounds())
                _write_atomic(cache / "max.png", encode_png(colour_depths(warped.values)))
                finite = ds["max_depth"].values[np.isfinite(ds["max_depth"].values)]
                meta = {"stamp": stamp, "times": [float(t) for t in ds["time"].values], "bounds": [w, s, e, n],
                        "max_depth_m": float(finite.max()) if finite.size else 0.0}
            finally:
                ds.close()
            _write_atomic(meta_path, json.dumps(meta).encode())
    return FloodMap(run_id, source, cache, meta["times"], meta["bounds"], meta["max_depth_m"], version)


def depth_png(fmap: FloodMap, index: int) -> Path:
    """The PNG of output time ``index`` (rendered on first request)."""
    if not 0 <= index < len(fmap.times):
        raise NotFoundError(f"run {fmap.run_id} has {len(fmap.times)} depth frames (0..{len(fmap.times) - 1}); "
                            f"no frame {index}")
    path = fmap.cache / f"depth_{index:04d}.png"
    with _lock_for(path):
        if not path.is_file():
            ds = _open_dataset(fmap.source)
            try:
                warped = _to_crs84(ds["depth"].isel(time=index), _output_shape(ds))
                _write_atomic(path, encode_png(colour_depths(warped.values)))
            finally:
                ds.close()
    return path


def _flood_map(request: Request, run_id: int) -> FloodMap:
    with request.app.state.engine.connect() as conn:
        flood_run, source = flood_result_path(conn, run_id)
    return prepare(flood_run, source)


# --- routes --------------------------------------------------------------------------------------------------

@router.get("", summary="Recent simulation runs, newest first")
def list_runs(request: Request, limit: int = Query(20, ge=1, le=500)) -> dict:
    """Id, kind, status, progress and times of recent runs; ``has_flood`` tells whether a flood map exists."""
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT id, kind, status, progress, started_at, finished_at, result_path, summary
            FROM simulation_runs ORDER BY id DESC LIMIT :limit
        """), {"limit": limit}).mappings().all()
    runs = []
    for row in rows:
        summary = row["summary"] or {}
        paths = (row["result_path"], summary.get("flood_result_path"), summary.get("result_path"))
        has_result = any(str(p or "").endswith(".nc") for p in paths) or summary.get("flood_run_id") is not None
        has_flood = row["status"] == "succeeded" and has_result
        runs.append({"id": row["id"], "kind": row["kind"], "status": row["status"],
                     "progress": float(row["progress"] or 0.0),
                     "started_at": row["started_at"].isoformat() if row["started_at"] else None,
                     "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
                     "has_flood": bool(has_flood)})
    return {"runs": runs}


@router.get("/{run_id}/flood", summary="Flood map of a run: times, CRS84 bounds, image URLs, colour scale")
def flood_metadata(request: Request, run_id: int) -> dict:
    fmap = _flood_map(request, run_id)
    base = f"/api/runs/{run_id}/flood"
    return {
        "run_id": run_id, "flood_run_id": fmap.run_id, "times": fmap.times, "bounds": fmap.bounds,
        "max_depth_m": fmap.max_depth_m,
        "max_depth_url": f"{base}/max.png?v={fmap.version}",
        "depth_url_template": f"{base}/depth/{{index}}.png?v={fmap.version}",
        "legend": {"units": "m", "min_visible": MIN_VISIBLE_DEPTH_M,
                   "stops": [{"depth": d, "rgba": list(c)} for d, c in DEPTH_STOPS]},
    }


@router.get("/{run_id}/flood/max.png", summary="Maximum depth over the run (PNG, EPSG:4326)",
            response_class=FileResponse)
def flood_max_png(request: Request, run_id: int) -> FileResponse:
    fmap = _flood_map(request, run_id)
    return FileResponse(fmap.cache / "max.png", media_type="image/png", headers={"Cache-Control": IMMUTABLE})


@router.get("/{run_id}/flood/depth/{index}.png", summary="Depth at output time index (PNG, EPSG:4326)",
            response_class=FileResponse)
def flood_depth_png(request: Request, run_id: int, index: int) -> FileResponse:
    fmap = _flood_map(request, run_id)
    return FileResponse(depth_png(fmap, index), media_type="image/png", headers={"Cache-Control": IMMUTABLE})
