"""Energy runs in batches of substations give the single pass's figures, in bounded memory."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest

from citytwin.io.grid_gpkg import read_grid_gpkg
from citytwin.models.energy import synthetic_weather
from citytwin.models.grid import assignments
from citytwin.scenarios.energy_batches import simulate_bounded
from citytwin.synth import generate_city


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    out = tmp_path_factory.mktemp("batched-city")
    generate_city(2000, 5, out)
    files = json.loads((out / "city.json").read_text())["files"]
    buildings = pd.DataFrame(gpd.read_file(out / files["buildings"], engine="pyogrio"))
    links = assignments(read_grid_gpkg(out / files["grid"])).dropna(subset=["building_id"])
    return buildings, links, synthetic_weather("temperate", year=2025)


def test_batches_reproduce_the_single_pass(city):
    buildings, links, weather = city
    hours = weather.sizes["time"]
    substations = links["substation"].nunique()
    assert substations >= 2  # else there is nothing to split
    single = simulate_bounded(buildings, weather, links, unassigned="ignore")
    assert single.batches == 1 and single.hourly_levels == ["transformer", "feeder", "substation"]
    # A budget that holds the feeders' and substations' series but not the transformers', and one
    # substation's assets per batch.
    feeders = links["feeder"].nunique()
    budget = (feeders + substations) * hours
    batched = simulate_bounded(buildings, weather, links, budget=budget, unassigned="ignore")
    assert batched.batches >= 2
    assert batched.hourly_levels == ["substation", "feeder"]
    assert set(batched.assets["level"].values) == {"feeder", "substation"}
    assert "electricity" not in batched.annual  # no hourly series in the per-asset figures

    # Every building and every asset gets the same figures as in one pass.
    pd.testing.assert_frame_equal(batched.buildings.sort_index(), single.buildings.sort_index(), rtol=1e-6)
    one = single.annual.sortby("asset")
    many = batched.annual.sortby("asset")
    assert list(one["asset"].values) == list(many["asset"].values)
    for name in ("electricity_kwh", "electricity_peak_kw", "heating_kwh", "overload_hours"):
        np.testing.assert_allclose(many[name].values, one[name].values, rtol=1e-5, err_msg=name)
    # The hourly series kept are the same too.
    kept = single.assets.sel(asset=batched.assets["asset"].values)
    np.testing.assert_allclose(batched.assets["electricity"].values, kept["electricity"].values, rtol=1e-5)
