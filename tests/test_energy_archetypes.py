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
# TABULA DE residential typology (IWU 2015), single-family houses as built, by construction-year
# class: heat-transfer coefficient H_tr + H_ve (W/K) and conditioned floor area (m2).
TABULA_DE_SFH = {
    "1919-1948": (973 + 154, 302.5),
    "1949-1957": (465 + 57, 111.1),
    "1958-1968": (496 + 62, 121.2),
    "1969-1978": (493 + 88, 173.2),
    "1979-1983": (364 + 110, 215.6),
    "1984-1994": (319 + 77, 150.2),
    "1995-2001": (197 + 62, 121.9),
    "2002-2009": (152 + 62, 146.5),
    "2010-2015": (194 + 95, 186.8),
    "2016-": (142 + 95, 186.8),
}
# The default periods of residential and apartment (archetypes.yaml) and the TABULA classes in each.
PERIODS = {
    "-1979": ("1919-1948", "1949-1957", "1958-1968", "1969-1978"),
    "1979-1995": ("1979-1983", "1984-1994"),
    "1995-2002": ("1995-2001",),
    "2002-": ("2002-2009", "2010-2015", "2016-"),
}
DEFAULT_PERIOD = "1979-1995"


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


def default_row(table: pd.DataFrame, use: str) -> pd.Series:
    """The row a building of ``use`` without year_built gets."""
    rows = table[table["use"] == use]
    return rows[rows["default_period"]].iloc[0] if rows["default_period"].any() else rows.iloc[0]


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
        row = default_row(table, use)
        assert row["electricity_kwh_m2"] == electricity and row["heating_kwh_m2"] == heating
        assert "DOE" in row["source"]
    assert table.loc["other", "electricity_kwh_m2"] == CBECS_ALL_BUILDINGS
    assert "CBECS" in table.loc["other", "source"]
    # Residential (every period): the per-customer figure over the documented 150 m2 per dwelling.
    np.testing.assert_allclose(
        table.loc[table["use"] == "residential", "electricity_kwh_m2"],
        US_RESIDENTIAL_KWH_PER_CUSTOMER / 150,
        rtol=1e-3,
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
    gas = annual_intensity(demand(b, cold, defaults)).loc[f"apartment:{DEFAULT_PERIOD}"]
    hp = annual_intensity(demand(b, cold, heat_pump)).loc["apartment"]
    assert hp["heating"] == pytest.approx(gas["heating"], rel=1e-5)
    assert hp["electricity"] - gas["electricity"] == pytest.approx((gas["heating"] - 139) / 3, rel=1e-3)


def test_default_periods_scale_heating_by_the_tabula_heat_loss_ratios(defaults):
    h = {k: heat_w_k / area for k, (heat_w_k, area) in TABULA_DE_SFH.items()}
    per_period = {p: np.mean([h[c] for c in classes]) for p, classes in PERIODS.items()}
    published = np.array([per_period[p] / per_period[DEFAULT_PERIOD] for p in PERIODS])
    table = defaults.table
    for use in ("residential", "apartment"):
        rows = table.loc[[f"{use}:{p}" for p in PERIODS]]
        assert list(table.index[table["use"] == use]) == list(rows.index)  # no other rows of the use
        heat = rows["heating_kwh_m2"].to_numpy()
        assert (np.diff(heat) < 0).all()  # every newer period needs less heat
        # The DOE figure belongs to the default period; the others follow TABULA within 1 %.
        assert rows.loc[f"{use}:{DEFAULT_PERIOD}", "default_period"] and rows["default_period"].sum() == 1
        assert rows.loc[f"{use}:{DEFAULT_PERIOD}", "heating_kwh_m2"] == 139
        np.testing.assert_allclose(heat / 139, published, rtol=0.01)
        # Degree-hour model: the calibrated heat-loss coefficients stand in the same ratios.
        u = rows["heat_loss_w_m2k"].to_numpy()
        np.testing.assert_allclose(u / u[1], heat / heat[1], rtol=1e-9)
        # Age changes the heating only.
        for column in ("electricity_kwh_m2", "cooling_kwh_m2", "schedule"):
            assert rows[column].nunique() == 1
        assert rows["source"].str.contains("TABULA").all()


@pytest.mark.parametrize("weather", ["reference", "cold"])
def test_older_buildings_heat_more_per_m2_in_the_configured_ratio(defaults, weather):
    years = [1925, 1985, 1999, 2015]  # one in each default period
    b = pd.DataFrame(
        {
            "source_id": [f"{u}-{y}" for u in ("residential", "apartment") for y in years],
            "floor_area_m2": [120.0, 180.0, 95.0, 240.0, 900.0, 2500.0, 1200.0, 4000.0],
            "use": ["residential"] * 4 + ["apartment"] * 4,
            "year_built": years * 2,
        }
    )
    w = defaults.reference.to_series() if weather == "reference" else synthetic_weather("cold")
    ds = demand(b, w, defaults)
    per_m2 = ds["heating"].sum("time", dtype=np.float64).values / ds["floor_area_m2"].values
    for k, use in enumerate(("residential", "apartment")):
        got = per_m2[4 * k : 4 * k + 4]
        ids = [f"{use}:{p}" for p in PERIODS]
        assert list(ds["archetype"].values[4 * k : 4 * k + 4]) == ids
        configured = defaults.table.loc[ids, "heating_kwh_m2"].to_numpy()
        assert (np.diff(got) < 0).all()
        np.testing.assert_allclose(got / got[-1], configured / configured[-1], rtol=0.01)
        if weather == "reference":
            np.testing.assert_allclose(got, configured, rtol=0.01)


def test_unknown_year_takes_the_default_period_and_is_reported(defaults):
    b = pd.DataFrame(
        {
            "source_id": list("abcdef"),
            "floor_area_m2": 100.0,
            "use": ["residential", "residential", "apartment", "office", "residential", "house"],
            "year_built": [np.nan, 1930, None, np.nan, "unknown", 2010],
        }
    )
    ds = demand(b, defaults.reference.to_series(), defaults)
    assert list(ds["archetype"].values) == [
        f"residential:{DEFAULT_PERIOD}",
        "residential:-1979",
        f"apartment:{DEFAULT_PERIOD}",
        "office",  # a use without periods has one row for every year
        f"residential:{DEFAULT_PERIOD}",
        "residential:2002-",
    ]
    report = demand_report(ds)
    assert report["missing_year_built"] == 4
    assert report["missing_year_archetypes"] == {
        f"residential:{DEFAULT_PERIOD}": 2,
        f"apartment:{DEFAULT_PERIOD}": 1,
        "office": 1,
    }
    heating = annual_intensity(ds)["heating"].to_numpy()
    assert heating[0] == pytest.approx(139, rel=0.01) and heating[1] > heating[0] > heating[5]


def test_a_user_row_replaces_the_default_periods_of_its_use(defaults):
    arch = load_archetypes([{"use": "residential", "heating_kwh_m2": 100}])
    rows = arch.table[arch.table["use"] == "residential"]
    assert list(rows.index) == ["residential"]  # one row for every year; periods not inherited
    assert rows["electricity_kwh_m2"].iloc[0] == 71.4 and not rows["default_period"].iloc[0]
    assert list(arch.table.index[arch.match(["residential"] * 2, [1900, 2020]).index]) == ["residential"] * 2
    assert (arch.table["use"] == "apartment").sum() == 4  # other uses keep their periods


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
