"""DEM reading and sampling: Den Haag (TIN-derived), Zug (LV03), Alexandria (UTM 18N), bad rasters, the
file's own nodata value (also through the terrain store in PostGIS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from sqlalchemy import text

from citytwin.db.terrain import register_dem
from citytwin.db.twin import init_twin
from citytwin.errors import InputError
from citytwin.io.buildings import read_buildings
from citytwin.io.cityjson import read_cityjson
from citytwin.io.dem import ground_elevation_for, read_dem, sample_dem
from _paths import SHARED_DATA

DATA = SHARED_DATA
DEN_HAAG_DEM = DATA / "denhaag_3d" / "derived" / "denhaag_dem_1m_from_TIN.tif"
DEN_HAAG = DATA / "denhaag_3d" / "DenHaag_01.city.json"
ZUG = DATA / "zug_cea"


@pytest.fixture(scope="module")
def den_haag_dem():
    return read_dem(DEN_HAAG_DEM)


def _tin() -> np.ndarray:
    """Triangles (T, 3, 3) of Den Haag's TINRelief, decoded from the CityJSON."""
    doc = json.loads(DEN_HAAG.read_text())
    vertices = np.array(doc["vertices"]) * doc["transform"]["scale"] + doc["transform"]["translate"]
    tin = next(o for o in doc["CityObjects"].values() if o["type"] == "TINRelief")
    return vertices[np.array([face[0] for face in tin["geometry"][0]["boundaries"]])]


def test_den_haag_dem_has_crs_nan_nodata_and_square_cells(den_haag_dem):
    assert den_haag_dem.dtype == np.float32
    assert den_haag_dem.shape == (673, 789) and den_haag_dem.dims == ("y", "x")
    assert den_haag_dem.rio.crs.to_epsg() == 28992
    assert den_haag_dem.attrs["square_cells"] and den_haag_dem.attrs["cell_size"] == (1.0, 1.0)
    valid = float(np.isfinite(den_haag_dem.values).mean())
    assert 0.49 < valid < 0.53  # SOURCE.txt: ~51 % of the bbox is the TIN footprint; -9999 became NaN
    assert float(np.nanmin(den_haag_dem.values)) > -10


def test_bilinear_sampling_is_exact_on_the_tin_planes(den_haag_dem):
    """The DEM is the TIN's vertices interpolated linearly at cell centres; bilinear interpolation of
    a plane is exact, so inside a triangle whose four surrounding cell centres lie in it, the sample
    equals the plane through the triangle (to float32 precision, ~1e-6 m at 10 m elevations).
    SOURCE.txt's interpolation re-triangulates the vertices (Delaunay), so the few TIN triangles that
    are not Delaunay triangles may differ by centimetres."""
    triangles = _tin()
    centroid = triangles.mean(axis=1)
    col0 = np.floor(centroid[:, 0] - 78248.0 - 0.5) + 78248.5  # neighbouring cell-centre x
    row0 = np.floor(458277.0 - centroid[:, 1] - 0.5)
    y0 = 458277.0 - row0 - 0.5
    corners = [shapely.points(col0 + dx, y0 - dy) for dx in (0, 1) for dy in (0, 1)]
    polygons = shapely.polygons(triangles[:, :, :2])
    inside = np.all([shapely.contains_properly(polygons, c) for c in corners], axis=0)
    assert inside.sum() > 500
    z = sample_dem(den_haag_dem, centroid[inside, 0], centroid[inside, 1])
    error = np.abs(z - centroid[inside, 2])
    assert (error < 1e-4).mean() > 0.995 and error.max() < 0.1


def test_sampling_edges_nodata_and_nearest(den_haag_dem):
    values = den_haag_dem.values
    row, col = np.argwhere(np.isfinite(values))[1000]
    x, y = 78248.5 + col, 458276.5 - row  # a valid cell centre
    assert sample_dem(den_haag_dem, [x], [y])[0] == pytest.approx(float(values[row, col]), abs=1e-6)
    assert sample_dem(den_haag_dem, [x + 0.3], [y - 0.2], method="nearest")[0] == float(values[row, col])
    outside = sample_dem(den_haag_dem, [78247.9, 80000.0, np.nan], [458000.0, 458000.0, 458000.0])
    assert np.isnan(outside).all()
    nodata_row, nodata_col = np.argwhere(np.isnan(values))[0]
    assert np.isnan(sample_dem(den_haag_dem, [78248.5 + nodata_col], [458276.5 - nodata_row])[0])
    with pytest.raises(InputError, match="unknown sampling method"):
        sample_dem(den_haag_dem, [x], [y], method="cubic")


def test_dask_backed_dem_samples_the_same(den_haag_dem):
    lazy = read_dem(DEN_HAAG_DEM, chunks=128)
    assert lazy.chunks is not None
    rng = np.random.default_rng(3)
    x, y = rng.uniform(78248, 79037, 500), rng.uniform(457604, 458277, 500)
    np.testing.assert_array_equal(sample_dem(lazy, x, y), sample_dem(den_haag_dem, x, y))


def test_den_haag_ground_from_dem_matches_the_buildings_ground_faces(den_haag_dem):
    frame = read_cityjson(DEN_HAAG, crs="EPSG:7415").frame
    ground = ground_elevation_for(frame, den_haag_dem, method="min_vertex", only_missing=False)
    assert ground.notna().all()
    difference = np.abs(ground.to_numpy() - frame["ground_elevation"].to_numpy())
    # The TIN runs along the walls' ground vertices; the 1 m grid blurs it by a few mm.
    assert np.median(difference) < 0.005 and np.percentile(difference, 90) < 0.02
    filled = ground_elevation_for(frame.assign(ground_elevation=np.nan), den_haag_dem)
    assert filled.notna().all() and filled.between(-5, 15).all()
    kept = ground_elevation_for(frame, den_haag_dem)
    np.testing.assert_array_equal(kept.to_numpy(), frame["ground_elevation"].to_numpy())


def test_zug_dem_in_lv03_covers_the_buildings_read_from_utm():
    dem = read_dem(ZUG / "terrain_2017" / "terrain.tif")
    assert "CH1903 / LV03" in dem.rio.crs.to_wkt()
    assert 416.7 <= float(np.nanmin(dem.values)) and float(np.nanmax(dem.values)) <= 425.8  # SOURCE.txt
    zone = read_buildings(ZUG / "cea_reference_case" / "zone.shp").frame
    ground = ground_elevation_for(zone, dem)
    assert ground.notna().all() and ground.between(416.7, 425.8).all()  # 100 % of the zone covered
    surroundings = read_buildings(ZUG / "cea_reference_case" / "surroundings.shp").frame
    inside = surroundings.to_crs(dem.rio.crs).within(shapely.box(*dem.rio.bounds()))
    assert inside.mean() == pytest.approx(0.87, abs=0.01)  # SOURCE.txt: 87 % of the surroundings


def test_alexandria_ground_from_the_utm_dtm():
    dem = read_dem(DATA / "alexandria_va" / "dtm.tif")
    assert dem.rio.crs.to_epsg() == 26918
    frame = read_buildings(DATA / "alexandria_va" / "buildings.geojson").frame  # EPSG:4326
    ground = ground_elevation_for(frame, dem)
    assert ground.notna().all() and ground.between(0, 30).all()  # Old Town lies a few m above the Potomac


def _write_raster(path: Path, data: np.ndarray, crs: str | None,
                  res: tuple[float, float] = (1.0, 1.0), *, nodata: float | None = -9999,
                  dtype: str = "float32", origin: tuple[float, float] = (1000, 2000)) -> Path:
    bands = data if data.ndim == 3 else data[None]
    count, height, width = bands.shape
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count, dtype=dtype,
                       crs=crs, transform=from_origin(*origin, *res), nodata=nodata) as out:
        out.write(bands.astype(dtype))
    return path


def test_bad_dems_are_input_errors(tmp_path):
    grid = np.arange(20, dtype=float).reshape(4, 5)
    with pytest.raises(InputError, match="not a readable raster"):
        read_dem(DATA / "alexandria_va" / "buildings.geojson")
    no_crs = _write_raster(tmp_path / "nocrs.tif", grid, None)
    with pytest.raises(InputError, match="no CRS in file; pass --crs"):
        read_dem(no_crs)
    assert read_dem(no_crs, crs="EPSG:28992").rio.crs.to_epsg() == 28992
    with pytest.raises(InputError, match="3 bands"):
        read_dem(_write_raster(tmp_path / "rgb.tif", np.stack([grid] * 3), "EPSG:28992"))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        read_dem(empty)
    oblong = read_dem(_write_raster(tmp_path / "oblong.tif", grid, "EPSG:28992", res=(2.0, 1.0)))
    assert not oblong.attrs["square_cells"] and "not square" in oblong.attrs["warnings"][0]
    # Sampling a 2 x 1 m grid: the centre of cell (row 1, col 2) and halfway to the next column.
    assert sample_dem(oblong, [1005.0], [1998.5])[0] == pytest.approx(7.0)
    assert sample_dem(oblong, [1006.0], [1998.5])[0] == pytest.approx(7.5)


def _half_nodata(nodata: float = -32768) -> np.ndarray:
    """10 x 10 cells: z = 100 + column in the western half, ``nodata`` in the eastern half."""
    grid = np.tile(100.0 + np.arange(10), (10, 1))
    grid[:, 5:] = nodata
    return grid


@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_the_files_nodata_value_is_nodata_not_a_fixed_one(tmp_path, dtype: str):
    path = _write_raster(tmp_path / f"{dtype}.tif", _half_nodata(), "EPSG:28992", nodata=-32768, dtype=dtype)
    dem = read_dem(path)
    assert dem.dtype == np.float32 and dem.attrs["file_nodata"] == -32768.0
    assert np.isnan(dem.values[:, 5:]).all() and np.isfinite(dem.values[:, :5]).all()
    assert float(np.nanmin(dem.values)) == 100.0
    x_nodata, x_data, y = 1007.5, 1002.5, 1995.5  # cell centres: column 7 (nodata) and column 2
    assert np.isnan(sample_dem(dem, [x_nodata], [y])[0])
    assert sample_dem(dem, [x_data], [y])[0] == pytest.approx(102.0)
    # Without a declared nodata every cell is data, -32768 included.
    plain = read_dem(_write_raster(tmp_path / f"{dtype}-plain.tif", _half_nodata(), "EPSG:28992", nodata=None,
                                   dtype=dtype))
    assert plain.attrs["file_nodata"] is None and np.isfinite(plain.values).all()
    assert sample_dem(plain, [x_nodata], [y])[0] == -32768.0


def test_register_dem_stores_the_files_nodata_and_leaves_ground_null_over_it(engine, tmp_path):
    origin = (420000.0, 5360000.0)  # 10 m cells in UTM 32N, the twin's CRS
    with engine.begin() as conn:
        init_twin(conn, "t", "EPSG:32632")
        conn.execute(text("""INSERT INTO buildings (source, source_id, footprint, height) VALUES
            ('t', 'on-data', ST_Multi(ST_MakeEnvelope(420010, 5359950, 420030, 5359970, 32632)), 5),
            ('t', 'on-nodata', ST_Multi(ST_MakeEnvelope(420070, 5359950, 420090, 5359970, 32632)), 5)"""))
    tagged = _write_raster(tmp_path / "tagged.tif", _half_nodata(), "EPSG:32632", (10.0, 10.0), nodata=-32768,
                           dtype="int16", origin=origin)
    assert register_dem(engine, tagged).updated == 1

    def ground() -> dict:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT source_id, ground_elevation FROM buildings")).all())

    grounds = ground()
    assert grounds["on-nodata"] is None  # not -32768, not -9999: no ground known there
    assert 100.0 < grounds["on-data"] < 103.0  # z = 100 + column, footprint over columns 1-2
    with engine.connect() as conn:
        assert conn.execute(text("SELECT nodata FROM terrain WHERE name = 'tagged'")).scalar() == -32768.0
    # The same cells in a file declaring no nodata are elevations; its terrain row says so with NULL.
    plain = _write_raster(tmp_path / "plain.tif", _half_nodata(), "EPSG:32632", (10.0, 10.0), nodata=None,
                          dtype="int16", origin=origin)
    with engine.begin() as conn:
        conn.execute(text("UPDATE buildings SET ground_elevation = NULL"))
    assert register_dem(engine, plain).updated == 2
    assert ground()["on-nodata"] == -32768.0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT nodata IS NULL FROM terrain WHERE name = 'plain'")).scalar()


def test_truncated_dem_is_an_input_error(tmp_path):
    rng = np.random.default_rng(1)
    whole = _write_raster(tmp_path / "whole.tif", rng.uniform(0, 50, (200, 200)), "EPSG:28992")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated.tif"):
        read_dem(truncated)
