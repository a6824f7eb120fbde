"""Archetypes: published defaults, calibration to the reference weather, user overrides, matching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from citytwin.errors import InputError
from citytwin.models.energy import USES, demand, demand_report, load_archetypes, synthetic_weather
from citytwin.models.energy.weather import heating_degree_hours

# REFERENCE.md "Energy demand": DOE commercial reference buildings, Chicago 5A (electricity /
# space heating, kWh/m2/yr), CBECS 2012 all buildings, US residential per customer.
PUBLISHED = {
    "office": (195, 13),  # medium office
    "retail": (221, 186),
    "school": (152, 86),  # primary school
    "hospital": (382, 161),
    "apartment": (85, 139),  # midrise apartment
    "warehouse": (51, 137),
    "supermarket": (484, 259),
}
CBECS_ALL_BUILDINGS = 157
US_RESIDENTIAL_KWH_PER_CUSTOMER = 10_715


@pytest.fixture(scope="module")
def defaults():
    return load_archetypes()


def one_building_per_archetype(archetypes, area=1000.0) -> pd.DataFrame:
    table = archetypes.table
    return pd.DataFrame(
        {
            "source_id": [f"b-{i}" for i in table.index],
            "floor_area_m2": area,
            "use": table["use"].to_numpy(),
            # a year inside each archetype's period: its start, else the year before its end, else 2000
            "year_built": table["year_from"].fillna(table["year_to"] - 1).fillna(2000).to_numpy(),
        }
    )


def annual_intensity(ds: xr.Dataset) -> pd.DataFrame:
    energy = {
        v: ds[v].sum("time", dtype=np.float64).values / ds["floor_area_m2"].values
        for v in ("electricity", "heating", "cooling")
    }
    return pd.DataFrame(energy, index=ds["archetype"].values)


def test_defaults_cover_the_vocabulary_with_published_figures(defaults):
    table = defaults.table
    assert set(USES) <= set(table["use"])
    for use, (electricity, heating) in PUBLISHED.items():
        row = table[table["use"] == use].iloc[0]
        assert row["electricity_kwh_m2"] == electricity and row["heating_kwh_m2"] == heating
        assert "DOE" in row["source"]
    assert table.loc["other", "electricity_kwh_m2"] == CBECS_ALL_BUILDINGS
    assert "CBECS" in table.loc["other", "source"]
    # Residential: the per-customer figure over the documented 150 m2 per dwelling.
    assert table.loc["residential", "electricity_kwh_m2"] == pytest.approx(
        US_RESIDENTIAL_KWH_PER_CUSTOMER / 150, rel=1e-3
    )
    assert table["source"].str.len().min() > 10
    assert (table["cooling_kwh_m2"] > 0).all() and table["source"].str.contains(
        "cooling ESTIMATE|ESTIMATE"
    ).all()
    # Derived heat-loss coefficients are physical: 0.1-10 W per m2 floor per K.
    assert table["heat_loss_w_m2k"].between(0.1, 10).all()


def test_reference_weather_reproduces_every_intensity_within_1_percent(defaults):
    ds = demand(one_building_per_archetype(defaults), defaults.reference.to_series(), defaults, chunk_size=3)
    got = annual_intensity(ds)
    table = defaults.table
    for column, var in (
        ("electricity_kwh_m2", "electricity"),
        ("heating_kwh_m2", "heating"),
        ("cooling_kwh_m2", "cooling"),
    ):
        np.testing.assert_allclose(got[var].to_numpy(), table.loc[got.index, column].to_numpy(), rtol=0.01)
    assert ds["electricity"].dtype == np.float32


def test_electric_heating_keeps_the_electricity_figure_and_adds_heat_pump_load(defaults):
    heat_pump = load_archetypes([{"use": "apartment", "heating_electric_share": 1.0, "heating_cop": 3.0}])
    b = pd.DataFrame({"source_id": ["a"], "floor_area_m2": [1000.0], "use": ["apartment"]})
    ref = defaults.reference.to_series()
    got = annual_intensity(demand(b, ref, heat_pump))
    assert got.loc["apartment", "electricity"] == pytest.approx(85, rel=0.01)
    assert heat_pump.table.loc["apartment", "base_electricity_kwh_m2"] == pytest.approx(85 - 139 / 3 - 38 / 3)
    # In a colder year the heat pump's extra heat shows up in electricity at 1/COP.
    cold = synthetic_weather("cold")
    gas = annual_intensity(demand(b, cold, defaults)).loc["apartment"]
    hp = annual_intensity(demand(b, cold, heat_pump)).loc["apartment"]
    assert hp["heating"] == pytest.approx(gas["heating"], rel=1e-5)
    assert hp["electricity"] - gas["electricity"] == pytest.approx((gas["heating"] - 139) / 3, rel=1e-3)


def test_user_csv_with_construction_periods(tmp_path, defaults):
    csv = tmp_path / "arch.csv"
    pd.DataFrame(
        [
            {"use": "office", "year_to": 1980, "heating_kwh_m2": 120, "source": "survey A"},
            {
                "use": "office",
                "year_from": 1980,
                "year_to": 2005,
                "heating_kwh_m2": 60,
                "default_period": True,
            },
            {"use": "office", "year_from": 2005, "heating_kwh_m2": 25},
        ]
    ).to_csv(csv, index=False)
    arch = load_archetypes(csv)
    offices = arch.table[arch.table["use"] == "office"]
    assert list(offices.index) == ["office:-1980", "office:1980-2005", "office:2005-"]
    # Gaps filled from the default office row; the other uses untouched.
    assert (offices["electricity_kwh_m2"] == 195).all()
    assert arch.table.loc["retail", "heating_kwh_m2"] == 186
    assert offices.loc["office:-1980", "source"] == "survey A"
    match = arch.match(["office"] * 5, [1950, 1980, 2004, 2020, np.nan])
    assert list(arch.table.index[match.index]) == [
        "office:-1980",
        "office:1980-2005",
        "office:1980-2005",
        "office:2005-",
        "office:1980-2005",
    ]
    assert match.missing_year == 1
    # Older offices need more heat: the heat-loss coefficients scale with the intensities.
    u = offices["heat_loss_w_m2k"]
    assert u.iloc[0] / u.iloc[2] == pytest.approx(120 / 25)
    ds = demand(one_building_per_archetype(arch), arch.reference.to_series(), arch)
    got = annual_intensity(ds)
    np.testing.assert_allclose(got.loc[offices.index, "heating"], [120, 60, 25], rtol=0.01)


def test_nearest_period_when_the_year_is_outside_every_period():
    arch = load_archetypes(
        [
            {"use": "school", "year_from": 1950, "year_to": 1990},
            {"use": "school", "year_from": 2000, "year_to": 2030},
        ]
    )
    match = arch.match(["school"] * 4, [1900, 1993, 1998, 2050])
    assert list(arch.table.index[match.index]) == [
        "school:1950-1990",
        "school:1950-1990",
        "school:2000-2030",
        "school:2000-2030",
    ]


def test_heat_loss_coefficient_instead_of_intensity(tmp_path, defaults):
    yaml_file = tmp_path / "arch.yaml"
    yaml_file.write_text("archetypes:\n  - {use: warehouse, heat_loss_w_m2k: 1.5, source: audit}\n")
    arch = load_archetypes(yaml_file)
    row = arch.table.loc["warehouse"]
    ref = arch.reference
    hdh = heating_degree_hours(ref.temperature, row["heating_base_c"]).sum()  # hvac_setback 0.5: weight below
    assert row["heat_loss_w_m2k"] == 1.5
    assert 0 < row["heating_kwh_m2"] < 1.5 * hdh / 1000  # setback hours count less than full ones
    b = pd.DataFrame({"source_id": ["w"], "floor_area_m2": [500.0], "use": ["warehouse"]})
    got = annual_intensity(demand(b, ref.to_series(), arch)).loc["warehouse"]
    assert got["heating"] == pytest.approx(row["heating_kwh_m2"], rel=0.01)


def test_unknown_and_aliased_uses_fall_back_and_are_reported(defaults):
    b = pd.DataFrame(
        {
            "source_id": list("abcdefg"),
            "floor_area_m2": 100.0,
            # BAG, unknown, unknown, missing, plain, CEA occupancy type, OSM building tag
            "use": ["Woonfunctie", "church", "church", None, "Office", "MULTI_RES", "garage"],
        }
    )
    ds = demand(b, synthetic_weather("temperate"), defaults)
    uses = ["residential", "other", "other", "other", "office", "apartment", "warehouse"]
    assert list(ds["use"].values) == uses
    assert list(ds["use_fallback"].values) == [False, True, True, True, False, False, False]
    report = demand_report(ds)
    assert report["unknown_uses"] == {"church": 2, "<missing>": 1}
    assert report["fallback_buildings"] == 3 and report["fallback_use"] == "other"


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"use": "office", "colour": "red"}], "unknown archetype fields \\['colour'\\]"),
        ([{"use": "office", "electricity_kwh_m2": -5}], "electricity_kwh_m2 = -5 outside"),
        ([{"use": "office", "electricity_kwh_m2": "lots"}], "is not a number"),
        ([{"use": "office", "schedule": "disco"}], "schedule 'disco' not defined"),
        ([{"use": "office", "year_to": 2000}, {"use": "office", "year_from": 1990}], "periods overlap"),
        ([{"use": "office", "heating_kwh_m2": 50, "heat_loss_w_m2k": 1.0}], "exactly one of heating_kwh_m2"),
        (
            [{"use": "office", "heating_electric_share": 1, "heating_cop": 0.5, "heating_kwh_m2": 200}],
            "less than the electricity of its electric heating",
        ),
        (
            [{"use": "office", "cooling_base_c": 10, "heating_base_c": 15}],
            "would heat and cool in the same hour",
        ),
        ([{"electricity_kwh_m2": 10}], "needs a 'use'"),
        (
            [{"use": "office", "electricity_profile": "ieee_rts"}],
            "electricity_profile 'ieee_rts' not defined",
        ),
    ],
)
def test_bad_archetype_tables(rows, message):
    with pytest.raises(InputError, match=message):
        load_archetypes(rows)


def test_reference_weather_must_be_able_to_reproduce_heating(tmp_path):
    tropical = xr.DataArray(
        np.full(8760, 28.0), coords={"time": pd.date_range("2021", periods=8760, freq="h")}, dims="time"
    )
    with pytest.raises(InputError, match="no heating degree-hours against 15.5 degC"):
        load_archetypes(reference_weather=tropical)
    with pytest.raises(InputError, match="fallback_use 'nothing' has no archetype"):
        load_archetypes({"fallback_use": "nothing"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("archetypes: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_archetypes(bad)
    (tmp_path / "table.txt").write_text("use,electricity_kwh_m2\noffice,100\n")
    with pytest.raises(InputError, match="expected a .csv, .yaml or .yml"):
        load_archetypes(tmp_path / "table.txt")
