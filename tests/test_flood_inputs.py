"""Bad inputs get an InputError that names the problem; forcing shapes are read as documented."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _flood_support import X0, Y0, cell_centre, like, make_dem
from shapely.geometry import Point, box

from citytwin.errors import InputError
from citytwin.models.flood import rasterize_obstacles, simulate


@pytest.fixture
def dem():
    yy, xx = np.mgrid[0:12, 0:15]
    return make_dem(0.01 * xx + 0.02 * yy, dx=2.0)


def test_non_square_cells(dem):
    stretched = dem.assign_coords(x=X0 + 3.0 * (np.arange(15) + 0.5))
    with pytest.raises(InputError, match="not square"):
        simulate(stretched, rain=10.0, duration=60.0)


def test_obstacles_in_another_crs(dem):
    footprints = gpd.GeoDataFrame(geometry=[box(4.0, 52.0, 4.001, 52.001)], crs="EPSG:4326")
    with pytest.raises(InputError, match="CRS EPSG:4326 differs from the DEM's EPSG:28992"):
        simulate(dem, rain=10.0, duration=60.0, obstacles=footprints)
    with pytest.raises(InputError, match="differs from the DEM"):
        rasterize_obstacles(footprints, dem)


def test_obstacles_without_crs(dem):
    footprints = gpd.GeoDataFrame(geometry=[box(X0, Y0 - 5, X0 + 5, Y0)])
    with pytest.raises(InputError, match="no CRS"):
        simulate(dem, rain=10.0, duration=60.0, obstacles=footprints)


@pytest.mark.parametrize("rain", [-5.0, pd.Series([10.0, -1.0], index=[0.0, 60.0])])
def test_negative_rain(dem, rain):
    with pytest.raises(InputError, match="negative intensity"):
        simulate(dem, rain=rain, duration=60.0)


def test_negative_rain_field(dem):
    field = np.full(dem.shape, 10.0)
    field[3, 4] = -2.0
    with pytest.raises(InputError, match="rain: must be non-negative; found -2 mm/h"):
        simulate(dem, rain=like(dem, field), duration=60.0)


def test_all_nodata_dem(dem):
    with pytest.raises(InputError, match="all nodata"):
        simulate(dem * np.nan, rain=10.0, duration=60.0)


def test_geographic_or_missing_crs(dem):
    with pytest.raises(InputError, match="not a projected CRS in metres"):
        simulate(make_dem(dem.values, dx=0.001, crs="EPSG:4326"), rain=10.0, duration=60.0)
    bare = xr.DataArray(dem.values, dims=("y", "x"), coords={"y": dem.y.values, "x": dem.x.values})
    with pytest.raises(InputError, match="no CRS"):
        simulate(bare, rain=10.0, duration=60.0)


def test_bad_numbers_and_shapes(dem):
    with pytest.raises(InputError, match="duration"):
        simulate(dem, rain=10.0, duration=0.0)
    with pytest.raises(InputError, match="manning"):
        simulate(dem, rain=10.0, duration=60.0, manning=0.0)
    with pytest.raises(InputError, match="theta"):
        simulate(dem, rain=10.0, duration=60.0, theta=1.5)
    with pytest.raises(InputError, match="shape"):
        simulate(dem, rain=10.0, duration=60.0, initial_depth=make_dem(np.zeros((5, 5)), dx=2.0))
    with pytest.raises(InputError, match="initial_depth: must be non-negative"):
        simulate(dem, rain=10.0, duration=60.0, initial_depth=like(dem, np.full(dem.shape, -0.1)))
    with pytest.raises(InputError, match="boundary north"):
        simulate(dem, rain=10.0, duration=60.0, boundary={"north": "leaky"})
    with pytest.raises(InputError, match="unknown side"):
        simulate(dem, rain=10.0, duration=60.0, boundary={"up": "open"})
    with pytest.raises(InputError, match="relative to the start"):
        simulate(dem, rain=pd.Series([5.0], index=pd.to_datetime(["2024-01-01"])), duration=60.0)


def test_inflow_off_the_grid_or_on_a_wall(dem):
    with pytest.raises(InputError, match=r"inflows\[0\].*outside the DEM"):
        simulate(dem, rain=0.0, duration=60.0, inflows=[(X0 - 100.0, Y0, 1.0)])
    blocked = np.zeros(dem.shape, dtype=bool)
    blocked[5, 5] = True
    with pytest.raises(InputError, match="obstacle"):
        simulate(dem, rain=0.0, duration=60.0, obstacles=like(dem, blocked),
                 inflows=[(*cell_centre(dem, 5, 5), 1.0)])
    with pytest.raises(InputError, match="negative discharge"):
        simulate(dem, rain=0.0, duration=60.0, inflows=[(*cell_centre(dem, 5, 5), -1.0)])


def test_forcing_shapes_are_equivalent(dem):
    # The same 1 m3/s inflow as a tuple list, a dict, a DataFrame and a GeoDataFrame; the same
    # constant rain as a number, a one-step hyetograph and a uniform field.
    x, y = cell_centre(dem, 6, 7)
    forms = [[(x, y, 1.0)], {(x, y): 1.0}, pd.DataFrame({"x": [x], "y": [y], "discharge": [1.0]}),
             gpd.GeoDataFrame({"discharge": [1.0]}, geometry=[Point(x, y)], crs="EPSG:28992")]
    rains = [12.0, pd.Series([12.0], index=pd.to_timedelta([0], unit="s")),
             like(dem, np.full(dem.shape, 12.0))]
    depths = [simulate(dem, rain=r, duration=120.0, inflows=f, boundary="closed").depth.values
              for r, f in zip(rains + rains[:1], forms)]
    for d in depths[1:]:
        assert np.allclose(d, depths[0], atol=1e-6)


def test_rasterize_obstacles_uses_cell_centres(dem):
    # A 4.6 x 4.6 m building from 4.2 to 8.8 m east and 2.2 to 6.8 m south of the corner covers the
    # centres of columns 2-3 (x = 5, 7 m) and rows 1-2 (y = 3, 5 m below the top edge), no others.
    footprint = box(X0 + 4.2, Y0 - 6.8, X0 + 8.8, Y0 - 2.2)
    mask = rasterize_obstacles(gpd.GeoDataFrame(geometry=[footprint], crs="EPSG:7415"), dem)
    expected = np.zeros(dem.shape, dtype=bool)
    expected[1:3, 2:4] = True
    assert np.array_equal(mask.values, expected)
    assert mask.rio.crs == dem.rio.crs
