"""``sample``: flood depth and arrival time at points, lines and footprints."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from _flood_support import X0, Y0, make_dem
from shapely.geometry import LineString, Point, box

from citytwin.errors import InputError
from citytwin.models.flood import sample, simulate


@pytest.fixture
def result():
    """A hand-made result on a 1 m grid: max_depth = row / 10 + col / 100, arrival = 100 row + col;
    a 3 x 3 'building' of closed cells at rows 4-6, cols 4-6; the corner cell never flooded."""
    ny, nx = 10, 12
    rows, cols = np.mgrid[0:ny, 0:nx]
    hmax = (rows / 10 + cols / 100).astype("float32")
    arrival = (100.0 * rows + cols).astype("float32")
    hmax[4:7, 4:7] = np.nan
    arrival[4:7, 4:7] = np.nan
    arrival[0, 0] = np.nan
    dem = make_dem(np.zeros((ny, nx)), dx=1.0)
    ds = xr.Dataset({"max_depth": (("y", "x"), hmax), "arrival_time": (("y", "x"), arrival)},
                    coords={"y": dem.y, "x": dem.x})
    return ds.rio.write_crs("EPSG:28992")


def _at(col: float, row: float) -> Point:
    """The point at fractional grid position (col, row) counted from the top-left corner."""
    return Point(X0 + col, Y0 - row)


def test_points_take_their_cell(result):
    assets = gpd.GeoDataFrame({"name": ["a", "b", "off"]}, index=[10, 20, 30],
                              geometry=[_at(2.5, 3.5), _at(11.9, 0.1), _at(20.0, 3.0)], crs="EPSG:28992")
    out = sample(result, assets)
    assert list(out.index) == [10, 20, 30]
    assert out.loc[10, "max_depth"] == pytest.approx(0.3 + 0.02)
    assert out.loc[10, "arrival_time"] == pytest.approx(302.0)
    assert out.loc[20, "max_depth"] == pytest.approx(0.11)
    assert np.isnan(out.loc[30, "max_depth"]) and out.loc[30, "cells"] == 0
    assert not out.loc[10, "around"]


def test_polygons_take_the_maximum_over_covered_cells(result):
    # Covers cell centres of rows 1-2, cols 8-9: max depth at (2, 9), earliest arrival at (1, 8).
    parcel = box(X0 + 7.6, Y0 - 2.9, X0 + 9.9, Y0 - 0.6)
    tiny = box(X0 + 1.1, Y0 - 8.2, X0 + 1.3, Y0 - 8.1)  # inside cell (8, 1), covers no centre
    out = sample(result, gpd.GeoSeries([parcel, tiny], crs="EPSG:28992"))
    assert out.loc[0, "max_depth"] == pytest.approx(0.2 + 0.09)
    assert out.loc[0, "arrival_time"] == pytest.approx(108.0)
    assert out.loc[0, "cells"] == 4
    assert out.loc[1, "max_depth"] == pytest.approx(0.8 + 0.01) and out.loc[1, "cells"] == 1


def test_a_building_that_is_a_wall_sees_the_water_around_it(result):
    building = box(X0 + 4.0, Y0 - 7.0, X0 + 7.0, Y0 - 4.0)  # exactly the closed cells
    out = sample(result, gpd.GeoDataFrame(geometry=[building], crs="EPSG:28992"))
    # The ring of cells whose centre is within 1 m of the walls: rows 3-7, cols 3-7 minus the
    # building (corner centres are 0.71 m from the corners). Deepest: (7, 7); earliest: (3, 3).
    assert out.loc[0, "around"]
    assert out.loc[0, "cells"] == 16
    assert out.loc[0, "max_depth"] == pytest.approx(0.7 + 0.07)
    assert out.loc[0, "arrival_time"] == pytest.approx(303.0)


def test_lines_and_plain_frames(result):
    cable = LineString([(X0 + 0.5, Y0 - 9.5), (X0 + 3.5, Y0 - 9.5)])  # along row 9, cols 0-3
    out = sample(result, gpd.GeoSeries([cable], crs="EPSG:28992"))
    assert out.loc[0, "cells"] == 4 and out.loc[0, "max_depth"] == pytest.approx(0.93)
    frame = pd.DataFrame({"x": [X0 + 0.5], "y": [Y0 - 0.5]}, index=["corner"])
    corner = sample(result, frame)
    assert corner.loc["corner", "max_depth"] == pytest.approx(0.0)
    assert np.isnan(corner.loc["corner", "arrival_time"])


def test_bad_features(result):
    with pytest.raises(InputError, match="reproject"):
        sample(result, gpd.GeoSeries([Point(4.3, 52.1)], crs="EPSG:4326"))
    with pytest.raises(InputError, match="GeoDataFrame"):
        sample(result, [(1, 2)])
    with pytest.raises(InputError, match="Dataset returned by flood.simulate"):
        sample(result.drop_vars("arrival_time"), gpd.GeoSeries([_at(1, 1)], crs="EPSG:28992"))


def test_sample_a_real_run():
    # End to end: rain into a trough; an asset in the trough floods, one on the crest stays dry.
    _yy, xx = np.mgrid[0:20, 0:30]
    dem = make_dem(0.05 * np.abs(xx - 15.0), dx=1.0)
    run = simulate(dem, rain=60.0, duration=1800.0, boundary="closed")
    assets = gpd.GeoDataFrame(geometry=[_at(15.5, 10.5), _at(0.5, 10.5)], crs="EPSG:28992")
    out = sample(run, assets)
    assert out.loc[0, "max_depth"] > 0.05 and np.isfinite(out.loc[0, "arrival_time"])
    assert out.loc[1, "max_depth"] < 0.01 and np.isnan(out.loc[1, "arrival_time"])
