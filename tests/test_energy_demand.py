"""Building demand: physics (degree-hours, climates), floor areas, laziness, bad input."""

from __future__ import annotations

import dask
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import xarray as xr

from citytwin.errors import InputError
from citytwin.models.energy import demand, demand_report, load_archetypes, prepare_weather, synthetic_weather


@pytest.fixture(scope="module")
def arch():
    return load_archetypes()


def every_use(arch, area=800.0) -> pd.DataFrame:
    uses = arch.uses
    return pd.DataFrame({"source_id": uses, "floor_area_m2": area, "use": uses, "year_built": 1990})


def annual(ds: xr.Dataset, var: str) -> pd.Series:
    return pd.Series(ds[var].sum("time", dtype=np.float64).values, index=ds["building"].values)


def constant_weather(value: float, year: int = 2021) -> xr.DataArray:
    time = pd.date_range(f"{year}-01-01", periods=8760, freq="h")
    return xr.DataArray(np.full(8760, value), coords={"time": time}, dims="time", name="temperature")


def test_colder_climate_raises_heating_and_lowers_cooling(arch):
    b = every_use(arch)
    ref = arch.reference.to_series()
    results = {
        name: demand(b, w, arch).compute()
        for name, w in (
            ("hot", synthetic_weather("hot")),
            ("reference", ref),
            ("colder", ref - 3.0),
            ("cold", synthetic_weather("cold")),
        )
    }
    heat = {k: annual(v, "heating") for k, v in results.items()}
    cool = {k: annual(v, "cooling") for k, v in results.items()}
    assert (heat["colder"] > heat["reference"]).all() and (cool["colder"] < cool["reference"]).all()
    assert (heat["cold"] > heat["reference"]).all() and (heat["reference"] > heat["hot"]).all()
    assert (cool["hot"] > cool["reference"]).all() and (cool["reference"] > cool["cold"]).all()
    # With electric cooling (share 1, COP 3) a colder year also needs less electricity.
    elec = {k: annual(v, "electricity") for k, v in results.items()}
    assert (elec["colder"] < elec["reference"]).all()


def test_constant_temperature_gives_the_analytical_degree_hour_load(arch):
    # Residential: HVAC always available (setback 1), heating base 15.5 degC, cooling base 18.3 degC.
    # No year_built: the default construction period.
    u_h = arch.table.loc["residential:1979-1995", "heat_loss_w_m2k"]
    b = pd.DataFrame({"source_id": ["h"], "floor_area_m2": [200.0], "use": ["residential"]})
    ds = demand(b, constant_weather(5.0), arch).compute()
    np.testing.assert_allclose(ds["heating"].values, 200.0 * u_h / 1000 * (15.5 - 5.0), rtol=1e-6)
    assert float(ds["cooling"].max()) == 0.0
    u_c = arch.table.loc["residential:1979-1995", "cooling_coefficient_w_m2k"]
    ds = demand(b, constant_weather(25.0), arch).compute()
    np.testing.assert_allclose(ds["cooling"].values, 200.0 * u_c / 1000 * (25.0 - 18.3), rtol=1e-6)
    assert float(ds["heating"].max()) == 0.0
    # Electricity = schedule-shaped base + cooling / COP 3 (electric share 1).
    base = demand(b, constant_weather(15.0), arch).compute()["electricity"].values
    np.testing.assert_allclose(
        ds["electricity"].values - base, ds["cooling"].values / 3.0, rtol=1e-4, atol=1e-5
    )


def test_floor_area_from_footprint_floors_and_height(arch):
    squares = [
        shapely.box(0, 0, 10, 20),
        shapely.box(100, 0, 110, 10),
        shapely.box(200, 0, 230, 10),
        shapely.box(300, 0, 310, 10),
    ]
    gdf = gpd.GeoDataFrame(
        {
            "source_id": ["given", "floors", "height", "low"],
            "floor_area_m2": [555.0, np.nan, np.nan, np.nan],
            "floors": [np.nan, 4, np.nan, np.nan],
            "height": [30.0, 99.0, 10.0, 1.2],
            "use": "office",
        },
        geometry=squares,
        crs="EPSG:28992",
    )
    ds = demand(gdf, synthetic_weather("temperate"), arch)
    # given area wins; 100 m2 x 4 floors; 300 m2 x round(10 / 3) = 3 floors; a 1.2 m shed is 1 floor.
    np.testing.assert_allclose(ds["floor_area_m2"].values, [555.0, 400.0, 900.0, 100.0])
    report = demand_report(ds)
    assert report["floors_from_height"] == 2
    assert report["floor_area_total_m2"] == pytest.approx(1955.0)
    # Same archetype and weather: energy scales with floor area exactly.
    e = annual(ds, "electricity")
    assert e["height"] / e["floors"] == pytest.approx(900 / 400, rel=1e-6)


def test_demand_is_lazy_and_matches_a_numpy_reference(arch):
    rng = np.random.default_rng(7)
    n = 230
    b = pd.DataFrame(
        {
            "source_id": [f"b{i}" for i in range(n)],
            "floor_area_m2": rng.uniform(50, 3000, n),
            "use": rng.choice(arch.uses, n),
            "year_built": rng.integers(1900, 2020, n),
        }
    )
    weather = synthetic_weather("temperate", seed=5)

    def refuse(*args, **kwargs):
        raise AssertionError("the demand graph was computed before it was asked for")

    with dask.config.set(scheduler=refuse):
        ds = demand(b, weather, arch, chunk_size=50)
        annual_lazy = ds["electricity"].sum("time")
    assert ds["electricity"].data.chunks[0] == (50, 50, 50, 50, 30)
    # Plain NumPy: floor area x the archetype's kW/m2 profile, building by building.
    unit = arch.unit_profiles(prepare_weather(weather))
    rows = arch.match(b["use"], b["year_built"]).index
    expected = b["floor_area_m2"].to_numpy()[:, None] * unit.electricity[rows].astype(np.float64)
    with dask.config.set(scheduler="sync"):
        got = ds["electricity"].values
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        np.testing.assert_allclose(annual_lazy.values, expected.sum(axis=1), rtol=1e-5)
    for var in ("electricity", "heating", "cooling"):
        assert np.isfinite(ds[var].values).all() and (ds[var].values >= 0).all()


def test_diversity_shifts_keep_annual_energy_and_lower_the_coincident_peak(arch):
    n = 40
    b = pd.DataFrame({"source_id": [f"o{i}" for i in range(n)], "floor_area_m2": 1000.0, "use": "office"})
    w = synthetic_weather("temperate")
    same = demand(b, w, arch).compute()
    spread = demand(b, w, arch, diversity_hours=2, seed=1).compute()
    np.testing.assert_allclose(annual(spread, "electricity"), annual(same, "electricity"), rtol=1e-5)
    peak_same = float(same["electricity"].sum("building").max())
    peak_spread = float(spread["electricity"].sum("building").max())
    assert peak_spread < peak_same
    again = demand(b, w, arch, diversity_hours=2, seed=1).compute()
    np.testing.assert_array_equal(again["electricity"].values, spread["electricity"].values)


def test_buildings_without_floor_area_error_or_are_dropped_and_reported(arch):
    gdf = gpd.GeoDataFrame(
        {
            "source_id": ["ok", "no-height", "no-geom", "flat"],
            "height": [9.0, np.nan, 9.0, 0.0],
            "use": "retail",
        },
        geometry=[shapely.box(0, 0, 10, 10), shapely.box(0, 0, 5, 5), None, shapely.box(0, 0, 5, 5)],
        crs="EPSG:28992",
    )
    w = synthetic_weather("temperate")
    with pytest.raises(InputError, match="3 buildings have no usable floor area") as err:
        demand(gdf, w, arch)
    assert err.value.details["buildings"] == {
        "no-height": "no floors and no height",
        "no-geom": "no floor_area_m2 and no footprint geometry",
        "flat": "no floors and no height",
    }
    ds = demand(gdf, w, arch, invalid="drop")
    assert list(ds["building"].values) == ["ok"]
    assert set(demand_report(ds)["dropped"]) == {"no-height", "no-geom", "flat"}
    assert np.isfinite(ds["electricity"].values).all()


@pytest.mark.parametrize(
    "frame, message",
    [
        (pd.DataFrame({"floor_area_m2": [10.0]}), "need a 'source_id' column"),
        (
            pd.DataFrame({"source_id": ["a"], "height": [3.0]}),
            "need 'floor_area_m2' or a footprint 'geometry'",
        ),
        (
            pd.DataFrame({"source_id": ["a", "a"], "floor_area_m2": [1.0, 2.0]}),
            "duplicate source_id values: \\['a'\\]",
        ),
        (
            pd.DataFrame({"source_id": ["a", None], "floor_area_m2": [1.0, 2.0]}),
            "1 buildings have no source_id",
        ),
        (pd.DataFrame({"source_id": ["a"], "floor_area_m2": [-4.0]}), "floor_area_m2 <= 0"),
        (
            gpd.GeoDataFrame(
                {"source_id": ["a"], "height": [6.0]},
                geometry=[shapely.box(4.3, 52.0, 4.31, 52.01)],
                crs="EPSG:4326",
            ),
            "geographic CRS",
        ),
    ],
)
def test_bad_buildings(arch, frame, message):
    with pytest.raises(InputError, match=message):
        demand(frame, synthetic_weather("temperate"), arch)


def test_bad_parameters_and_weather(arch):
    b = pd.DataFrame({"source_id": ["a"], "floor_area_m2": [100.0]})
    w = synthetic_weather("temperate")
    with pytest.raises(InputError, match="chunk_size must be a positive integer"):
        demand(b, w, arch, chunk_size=0)
    with pytest.raises(InputError, match="invalid must be"):
        demand(b, w, arch, invalid="skip")
    gappy = w.copy()
    gappy[1000:1012] = np.nan
    with pytest.raises(InputError, match="gap of 12 missing hours from 2021-02-11 16:00"):
        demand(b, gappy, arch)
    ds = demand(b, gappy, arch, max_gap_hours=12)
    assert demand_report(ds)["weather_filled_hours"] == 12
    assert np.isfinite(ds["heating"].values).all()
    with pytest.raises(InputError, match="one calendar year"):
        demand(b, w.isel(time=slice(0, 24 * 30)), arch)
    with pytest.raises(InputError, match="no 'temperature' variable"):
        demand(b, xr.Dataset({"wind": w}), arch)
