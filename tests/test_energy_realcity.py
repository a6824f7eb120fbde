"""Real buildings (TU Delft campus, Den Haag tile 01) through the demand model: plausible totals."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from citytwin.io.cityjson import read_cityjson
from citytwin.models.energy import load_archetypes, simulate, synthetic_weather
from _paths import SHARED_DATA

DATA = SHARED_DATA
CITIES = {
    "delft": (DATA / "delft_cjio" / "delft.json", None),
    "denhaag": (DATA / "denhaag_3d" / "DenHaag_01.city.json", "EPSG:7415"),  # CRS not declared in the file
}


@pytest.fixture(scope="module")
def arch():
    return load_archetypes()


@pytest.fixture(scope="module", params=sorted(CITIES))
def city(request):
    path, crs = CITIES[request.param]
    frame = read_cityjson(path, crs=crs).frame
    return request.param, frame


def toy_grid(frame) -> pd.DataFrame:
    """Transformers on a 100 m grid of footprint centroids, feeders on 300 m, one substation."""
    c = frame.geometry.centroid
    x, y = c.x.to_numpy(), c.y.to_numpy()
    return pd.DataFrame(
        {
            "building_id": frame["source_id"].astype(str).to_numpy(),
            "transformer": [f"T{int(a // 100)}_{int(b // 100)}" for a, b in zip(x, y, strict=True)],
            "feeder": [f"F{int(a // 300)}_{int(b // 300)}" for a, b in zip(x, y, strict=True)],
            "substation": "S",
        }
    )


def test_real_buildings_get_plausible_intensities_and_totals(city, arch):
    name, frame = city
    weather = synthetic_weather("temperate")  # De Bilt-like: the Netherlands
    result = simulate(frame, weather, toy_grid(frame), archetypes=arch, diversity_hours=1)
    table = result.buildings
    assert len(table) == len(frame) and result.report["dropped"] == {}
    # Floor area: footprint x floors, floors = max(1, round(height / 3 m)) (no floor counts in the data).
    floors = np.maximum(1, np.round(frame["height"].astype(float).to_numpy() / 3.0))
    expected_area = frame.geometry.area.to_numpy() * floors
    np.testing.assert_allclose(table.loc[frame["source_id"], "floor_area_m2"], expected_area, rtol=1e-9)
    assert result.report["floors_from_height"] == len(frame)

    # Per building: 30-400 kWh/m2/yr of electricity (CBECS 2012 median ~94, mean 157; DOE
    # reference buildings 51-484); heating below the Chicago figure in the milder Dutch climate.
    assert table["electricity_kwh_m2"].between(30, 400).all()
    other = table.loc[table["use"] == "other"]
    assert len(other) == len(table)  # the files carry no use: all fall to "other" (CBECS 157, heating 137)
    assert other["heating_kwh_m2"].between(0.5 * 137, 137).all()
    assert other["cooling_kwh_m2"].lt(71).all()

    # City totals are floor area x intensity: 0.8-1.0 of CBECS's 157 kWh/m2 (less cooling than Chicago).
    area = table["floor_area_m2"].sum()
    per_m2 = table["electricity_kwh"].sum() / area
    assert 0.8 * 157 < per_m2 < 157
    # Typical building sizes: Delft campus 160 small buildings, Den Haag 844 terraced-house blocks.
    mean_area = area / len(table)
    assert {"delft": 20 < mean_area < 500, "denhaag": 100 < mean_area < 1000}[name]

    # On the toy grid: energy conserved, and diversity makes the substation peak smaller than the
    # sum of the building peaks (coincidence factor < 1).
    assets = result.assets
    substation = assets.sel(asset="S")
    assert float(substation["electricity_kwh"]) == pytest.approx(table["electricity_kwh"].sum(), rel=1e-12)
    coincidence = float(substation["electricity_peak_kw"]) / table["electricity_peak_kw"].sum()
    assert 0.5 < coincidence < 1.0
    # Peak electric load per m2 between 10 and 120 W/m2 at substation level.
    assert 10 < 1000 * float(substation["electricity_peak_kw"]) / area < 120
