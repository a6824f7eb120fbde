"""The flood model on real data: the Den Haag DEM (1 m, from the city's TIN) and its buildings."""

from __future__ import annotations


import numpy as np
import pytest
import rioxarray

from citytwin.io.cityjson import read_cityjson
from citytwin.models.flood import rasterize_obstacles, sample, simulate
from _paths import SHARED_DATA

DATA = SHARED_DATA / "denhaag_3d"


@pytest.fixture(scope="module")
def denhaag():
    dem = rioxarray.open_rasterio(DATA / "derived" / "denhaag_dem_1m_from_TIN.tif").squeeze("band", drop=True)
    assert dem.rio.nodata == -9999  # the model must treat the file's nodata value as "outside"
    # 2 m cells keep the one-hour storm under ~10 s; the coarsened grid is written with its transform.
    coarse = dem.where(dem != -9999).coarsen(x=2, y=2, boundary="trim").mean()
    coarse = coarse.rio.write_transform(coarse.rio.transform(recalc=True)).rio.write_crs(dem.rio.crs)
    buildings = read_cityjson(DATA / "DenHaag_01.city.json", crs="EPSG:7415").frame
    return dem, coarse, buildings


def test_raw_file_nodata_is_closed_and_footprints_block_cells(denhaag):
    dem, _, buildings = denhaag
    blocked = rasterize_obstacles(buildings, dem)
    assert blocked.dtype == bool and blocked.shape == dem.shape
    # Footprints cover about a third of the valid area of this dense inner-city tile.
    valid = (dem.values != -9999)
    share = blocked.values[valid].mean()
    assert 0.2 < share < 0.5
    # A short run straight on the raw file (nodata -9999, not NaN): water never appears outside.
    result = simulate(dem.isel(x=slice(0, 200), y=slice(0, 200)), rain=50.0, duration=60.0, boundary="closed")
    raw = dem.isel(x=slice(0, 200), y=slice(0, 200)).values
    assert np.all(np.isnan(result.max_depth.values[raw == -9999]))
    assert result.attrs["relative_volume_error"] < 1e-6


def test_one_hour_storm_on_den_haag(denhaag):
    _, dem, buildings = denhaag
    result = simulate(dem, rain=50.0, duration=3600.0, obstacles=buildings, boundary="closed",
                      output_interval=1800.0)
    attrs = result.attrs
    assert attrs["relative_volume_error"] < 1e-6
    # 50 mm on every open (valid, unbuilt) cell, all kept by the closed borders.
    assert attrs["rain_volume"] > 5000
    assert attrs["final_volume"] == pytest.approx(attrs["rain_volume"], rel=1e-6)
    hmax = result.max_depth.values
    z = dem.values
    wet = np.isfinite(hmax)
    top = wet & (hmax >= np.quantile(hmax[wet], 0.99))
    # The deepest water lies in the lowest ground: the top 1 % depths sit more than 2 m below the
    # median ground level (the tile spans 2.5-16 m NAP; median about 6.4 m).
    assert z[top].mean() < np.median(z[wet]) - 2.0
    assert np.corrcoef(z[wet], hmax[wet])[0, 1] < 0
    # Buildings are walls: no water inside footprints. Sampling them gives the water against
    # their walls (the cells around), which is what the outage model consumes.
    at_buildings = sample(result, buildings)
    assert list(at_buildings.index) == list(buildings.index)
    assert at_buildings["around"].mean() > 0.95
    assert (at_buildings["max_depth"] > 0).mean() > 0.95
    assert at_buildings["max_depth"].max() < np.nanmax(hmax) + 1e-6
