"""Aggregation up the grid: conservation, NumPy reference, laziness, ratings, bad input, simulate()."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest

from citytwin.errors import InputError
from citytwin.models.energy import (
    aggregate,
    building_summary,
    demand,
    load_archetypes,
    simulate,
    synthetic_weather,
)

N = 600


@pytest.fixture(scope="module")
def arch():
    return load_archetypes()


@pytest.fixture(scope="module")
def city(arch):
    rng = np.random.default_rng(11)
    buildings = pd.DataFrame(
        {
            "source_id": [f"b{i:04d}" for i in range(N)],
            "floor_area_m2": rng.uniform(60, 4000, N),
            "use": rng.choice(arch.uses, N),
            "year_built": rng.integers(1900, 2020, N).astype(float),
        }
    )
    # Radial grid: 2 buildings per service point, 10 service points per transformer, 5 transformers
    # per feeder, 2 feeders per substation (NumPy-built so the test does not reuse the model's code).
    sp = np.arange(N) // 2
    assignments = pd.DataFrame(
        {
            "building_id": buildings["source_id"],
            "service_point": [f"SP{i}" for i in sp],
            "transformer": [f"T{i // 10}" for i in sp],
            "feeder": [f"F{i // 50}" for i in sp],
            "substation": [f"S{i // 100}" for i in sp],
        }
    )
    return buildings, assignments.sample(frac=1.0, random_state=3)  # order must not matter


def level_sum(agg, level: str, var: str) -> float:
    return float(agg[f"{var}_kwh"].where(agg["level"] == level, drop=True).sum())


@pytest.mark.parametrize("method", ["factored", "stream", "blocks"])
def test_aggregation_conserves_energy_at_every_level(arch, city, method):
    buildings, assignments = city
    ds = demand(buildings, synthetic_weather("temperate"), arch, chunk_size=128, diversity_hours=1)
    levels = ["service_point", "transformer", "feeder", "substation"]
    # Per-building sums with the same float32 building-hour values as the method being checked.
    summary_method = "factored" if method == "factored" else "blocks"
    agg, summary = dask.compute(
        aggregate(ds, assignments, levels=levels, method=method), building_summary(ds, method=summary_method)
    )
    assert agg.sizes["asset"] == 300 + 30 + 6 + 3
    for var in ("electricity", "heating", "cooling"):
        total = float(summary[f"{var}_kwh"].sum())
        assert total > 0
        for level in levels:
            assert level_sum(agg, level, var) == pytest.approx(total, rel=1e-12)
    assert int(agg["buildings"].sel(asset="F0")) == 100
    np.testing.assert_allclose(
        float(agg["floor_area_m2"].where(agg["level"] == "substation").sum()),
        buildings["floor_area_m2"].sum(),
        rtol=1e-12,
    )


@pytest.mark.parametrize("method", ["factored", "stream", "blocks"])
def test_hourly_feeder_load_matches_a_pandas_groupby_of_the_full_matrix(arch, city, method):
    buildings, assignments = city
    ds = demand(buildings, synthetic_weather("cold"), arch, chunk_size=100, diversity_hours=2)

    def refuse(*args, **kwargs):
        raise AssertionError("computed before asked")

    with dask.config.set(scheduler=refuse):
        agg = aggregate(
            ds, assignments, levels=["feeder"], ratings=pd.Series({"F0": 2.0, "F1": 50.0}), method=method
        )
        summary = building_summary(ds, method=method)
    assert f'"electricity": "{method}"' in agg.attrs["report"]
    with dask.config.set(scheduler="sync"):
        agg, summary = dask.compute(agg, summary)
        full = ds["electricity"].values.astype(np.float64)
    # Plain pandas over the materialised matrix (small city): the reference for both methods.
    feeder_of = assignments.set_index("building_id").loc[ds["building"].values, "feeder"].to_numpy()
    expected = pd.DataFrame(full).groupby(feeder_of).sum()
    np.testing.assert_allclose(
        agg["electricity"].sel(asset=expected.index).values, expected.to_numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        agg["electricity_peak_kw"].sel(asset=expected.index), expected.max(axis=1), rtol=1e-6
    )
    peak_hour = expected.to_numpy().argmax(axis=1)
    assert (
        agg["electricity_peak_time"].sel(asset=expected.index).values == ds["time"].values[peak_hour]
    ).all()
    np.testing.assert_allclose(summary["electricity_kwh"].values, full.sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(summary["electricity_peak_kw"].values, full.max(axis=1), rtol=1e-6)
    assert (summary["electricity_peak_time"].values == ds["time"].values[full.argmax(axis=1)]).all()
    # Ratings in MVA at power factor 0.95: capacity 2 MVA -> 1,900 kW.
    cap = 2000.0 * 0.95
    assert float(agg["rating_kw"].sel(asset="F0")) == pytest.approx(cap)
    f0 = expected.loc["F0"].to_numpy()
    assert int(agg["overload_hours"].sel(asset="F0")) == int((f0 > cap).sum())
    assert bool(agg["overload"].sel(asset="F0")) == (f0.max() > cap)
    assert float(agg["loading"].sel(asset="F0")) == pytest.approx(f0.max() / cap)
    assert not bool(agg["overload"].sel(asset="F1"))  # 50 MVA: ample
    assert np.isnan(float(agg["rating_kw"].sel(asset="F2"))) and not bool(agg["overload"].sel(asset="F2"))


def test_changed_demand_falls_back_to_blocks(arch, city):
    buildings, assignments = city
    ds = demand(buildings, synthetic_weather("temperate"), arch, chunk_size=200)
    scaled = ds * 2.0  # no longer "area x profile" as registered: the factored shortcut must not apply
    agg = aggregate(scaled, assignments, levels=["substation"])
    assert '"electricity": "blocks"' in agg.attrs["report"]
    base = aggregate(ds, assignments, levels=["substation"]).compute()
    np.testing.assert_allclose(agg["electricity_kwh"].values, 2 * base["electricity_kwh"].values, rtol=1e-6)
    with pytest.raises(InputError, match="has no factors"):
        aggregate(scaled, assignments, method="factored")
    with pytest.raises(InputError, match="method must be"):
        aggregate(ds, assignments, method="magic")


def test_rating_units(arch, city):
    buildings, assignments = city
    ds = demand(buildings.iloc[:20], synthetic_weather("temperate"), arch)
    sub = assignments[assignments["building_id"].isin(buildings["source_id"].iloc[:20])]
    kw = aggregate(ds, sub, levels=["transformer"], ratings=pd.Series({"T0": 250.0}), rating_unit="kW")
    assert float(kw["rating_kw"].sel(asset="T0")) == 250.0
    kva = aggregate(
        ds,
        sub,
        levels=["transformer"],
        ratings=pd.Series({"T0": 250.0, "T9": 1.0}),
        rating_unit="kVA",
        power_factor=0.9,
    )
    assert float(kva["rating_kw"].sel(asset="T0")) == pytest.approx(225.0)
    assert '"ratings_without_asset": 1' in kva.attrs["report"]
    with pytest.raises(InputError, match="rating_unit must be one of"):
        aggregate(ds, sub, ratings=pd.Series({"T0": 1.0}), rating_unit="hp")
    with pytest.raises(InputError, match="ratings must be positive numbers; bad for \\['T0'\\]"):
        aggregate(ds, sub, ratings=pd.Series({"T0": -1.0}))


def test_bad_assignments(arch, city):
    buildings, assignments = city
    ds = demand(buildings, synthetic_weather("temperate"), arch)
    two_parents = assignments.copy()
    two_parents.loc[two_parents["building_id"] == "b0000", "feeder"] = "F5"
    with pytest.raises(InputError, match="transformer 'T0' is assigned to several feeders \\['F0', 'F5'\\]"):
        aggregate(ds, two_parents)
    dup = pd.concat([assignments, assignments.iloc[:1]])
    with pytest.raises(InputError, match="more than once"):
        aggregate(ds, dup)
    clash = assignments.copy()
    clash["substation"] = clash["feeder"]
    with pytest.raises(InputError, match="asset ids used at more than one level: \\['F0'"):
        aggregate(ds, clash)
    partial = assignments[assignments["building_id"] != "b0005"]
    with pytest.raises(InputError, match="1 buildings have no assignment \\(first: \\['b0005'\\]\\)"):
        aggregate(ds, partial)
    with pytest.raises(InputError, match="levels must be a non-empty subset"):
        aggregate(ds, assignments, levels=["meter"])
    with pytest.raises(InputError, match="no column for levels \\['service_point'\\]"):
        aggregate(ds, assignments.drop(columns="service_point"), levels=["service_point"])
    with pytest.raises(InputError, match="'building_id' column"):
        aggregate(ds, assignments.rename(columns={"building_id": "id"}))


def test_unassigned_buildings_ignored_on_request_and_counted(arch, city):
    buildings, assignments = city
    ds = demand(buildings, synthetic_weather("temperate"), arch)
    partial = assignments[~assignments["building_id"].isin(["b0005", "b0006"])].copy()
    # b0007 hangs directly off the feeder (no transformer).
    partial.loc[partial["building_id"] == "b0007", ["service_point", "transformer"]] = np.nan
    agg, summary = dask.compute(aggregate(ds, partial, unassigned="ignore"), building_summary(ds))
    kwh = summary["electricity_kwh"].to_series()
    served = kwh.drop(["b0005", "b0006"]).sum()
    assert level_sum(agg, "feeder", "electricity") == pytest.approx(served, rel=1e-12)
    assert level_sum(agg, "transformer", "electricity") == pytest.approx(served - kwh["b0007"], rel=1e-12)
    assert '"unassigned_buildings": 2' in agg.attrs["report"]
    assert '"transformer": 3' in agg.attrs["report"]  # two unassigned + one without transformer


def test_simulate_returns_building_table_and_asset_series_in_one_pass(arch, city):
    from distributed import Client, LocalCluster

    buildings, assignments = city
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        result = simulate(
            buildings,
            synthetic_weather("temperate"),
            assignments,
            archetypes=arch,
            ratings=pd.Series({"S0": 5.0}),
            chunk_size=150,
        )
        # The generic path (numba group-sum in the worker processes) gives the same feeder loads.
        ds = demand(buildings, synthetic_weather("temperate"), arch, chunk_size=150)
        blocks = aggregate(ds, assignments, levels=["feeder"], method="blocks").compute()
    np.testing.assert_allclose(
        blocks["electricity"].values,
        result.assets["electricity"].sel(asset=blocks["asset"]).values,
        rtol=1e-5,
    )
    table = result.buildings
    assert len(table) == N and table.index.name == "building"
    for column in (
        "floor_area_m2",
        "use",
        "archetype",
        "electricity_kwh",
        "heating_kwh",
        "cooling_kwh",
        "electricity_peak_kw",
        "electricity_peak_time",
        "electricity_kwh_m2",
    ):
        assert column in table.columns
    assert table["electricity_kwh_m2"].between(30, 500).all()
    assets = result.assets
    assert set(assets["level"].values) == {
        "transformer",
        "feeder",
        "substation",
    }  # service points only on request
    assert level_sum(assets, "substation", "electricity") == pytest.approx(
        table["electricity_kwh"].sum(), rel=1e-12
    )
    assert (table["electricity_peak_kw"] <= table["electricity_kwh"]).all()
    assert result.report["aggregation"]["unassigned_buildings"] == 0
    assert result.report["buildings_simulated"] == N
    assert assets["electricity"].dtype == np.float32 and assets["electricity_kwh"].dtype == np.float64
