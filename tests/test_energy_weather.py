"""Weather for the energy model: EPW reader, synthetic climates, validation and gap handling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from citytwin.errors import InputError
from citytwin.io.weather import TYPICAL_YEAR, read_epw
from citytwin.models.energy.weather import (
    CLIMATES,
    cooling_degree_hours,
    heating_degree_hours,
    prepare_weather,
    synthetic_weather,
    year_index,
)

HEADER = [
    "LOCATION,Delft,ZH,NLD,citytwin test,062150,52.00,4.36,1.0,0.0",
    "DESIGN CONDITIONS,0",
    "TYPICAL/EXTREME PERIODS,0",
    "GROUND TEMPERATURES,0",
    "HOLIDAYS/DAYLIGHT SAVINGS,No,0,0,0",
    "COMMENTS 1,synthetic fixture written by the test",
    "COMMENTS 2,",
    "DATA PERIODS,1,1,Data,Friday, 1/ 1,12/31",
]


def write_epw(
    path: Path,
    temperature: np.ndarray,
    *,
    years=None,
    rows: int | None = None,
    header: list[str] | None = None,
) -> Path:
    """A standard EPW: 8 header lines + one 35-field record per hour (hour field 1-24)."""
    time = year_index(2021)
    rows = len(temperature) if rows is None else rows
    lines = list(header or HEADER)
    for i in range(rows):
        t = time[i]
        year = years[i] if years is not None else 2021
        fields = [
            year,
            t.month,
            t.day,
            t.hour + 1,
            60,
            "?9?9?9?9E0?9?9?9?9?9?9?9?9?9?9?9?9?9?9?9*9*9?9?9?9",
            f"{temperature[i]:.1f}",
            5.0,
            80,
            101300,
            0,
            1415,
            300,
            100 if 8 <= t.hour <= 16 else 0,
            0,
            0,
            0,
            0,
            0,
            0,
            200,
            4.5,
            5,
            5,
            20.0,
            77777,
            9,
            999999999,
            10,
            0.1,
            0,
            88,
            0.2,
            0.0,
            1.0,
        ]
        assert len(fields) == 35
        lines.append(",".join(str(f) for f in fields))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_epw_places_hours_and_reads_metadata(tmp_path):
    temps = 10 + 5 * np.sin(np.arange(8760) / 24 * 2 * np.pi)
    ds = read_epw(write_epw(tmp_path / "f.epw", temps))
    assert ds.sizes["time"] == 8760
    # Hour field 1 is the hour ending 01:00: labelled by its start, 00:00.
    assert ds["time"].values[0] == np.datetime64("2021-01-01T00:00")
    assert ds["time"].values[-1] == np.datetime64("2021-12-31T23:00")
    np.testing.assert_allclose(ds["temperature"].values, np.round(temps, 1))
    assert ds.attrs["city"] == "Delft" and ds.attrs["latitude"] == pytest.approx(52.0)
    assert ds.attrs["utc_offset_h"] == 1.0
    assert ds["wind_speed"].values[0] == pytest.approx(4.5)
    assert ds["global_horizontal_radiation"].values[0] == 0.0  # night: 0 is a value, not missing
    assert ds.attrs["missing_temperature_hours"] == 0
    prepared = prepare_weather(ds)
    assert prepared.filled_hours == 0 and len(prepared.temperature) == 8760


def test_typical_year_files_go_on_one_calendar_year(tmp_path):
    time = year_index(2021)
    years = np.where(time.month <= 6, 1995, 2003)  # a TMY mixes months of different years
    ds = read_epw(write_epw(tmp_path / "tmy.epw", np.full(8760, 8.0), years=years))
    assert pd.DatetimeIndex(ds["time"].values).year.unique().tolist() == [TYPICAL_YEAR]
    ds2016 = read_epw(tmp_path / "tmy.epw", year=2019)
    assert ds2016["time"].values[0] == np.datetime64("2019-01-01T00:00")


def test_epw_missing_values_interpolated_up_to_limit_then_error(tmp_path):
    temps = np.linspace(-5, 25, 8760)
    temps[100:104] = 99.9  # EPW missing code for dry bulb
    ds = read_epw(write_epw(tmp_path / "gap.epw", temps))
    assert ds.attrs["missing_temperature_hours"] == 4
    assert np.isnan(ds["temperature"].values[100:104]).all()
    prepared = prepare_weather(ds, max_gap_hours=6)
    assert prepared.filled_hours == 4
    # Linear interpolation between the neighbours 99 and 104.
    expected = np.interp(np.arange(100, 104), [99, 104], [round(temps[99], 1), round(temps[104], 1)])
    np.testing.assert_allclose(prepared.temperature[100:104], expected, atol=1e-9)
    with pytest.raises(InputError, match="gap of 4 missing hours from 2021-01-05 04:00"):
        prepare_weather(ds, max_gap_hours=3)


def test_epw_bad_files(tmp_path):
    with pytest.raises(InputError, match="not an EPW file"):
        read_epw(write_epw(tmp_path / "x.epw", np.zeros(10), header=["HELLO"] + HEADER[1:]))
    with pytest.raises(InputError, match="not found"):
        read_epw(tmp_path / "missing.epw")
    sub = HEADER[:-1] + ["DATA PERIODS,1,4,Data,Friday, 1/ 1,12/31"]
    with pytest.raises(InputError, match="4 records per hour"):
        read_epw(write_epw(tmp_path / "sub.epw", np.zeros(10), header=sub))
    short = read_epw(write_epw(tmp_path / "short.epw", np.zeros(8000)))
    with pytest.raises(InputError, match="8760 hours from 2021-01-01 00:00:00 for 2021; got 8000"):
        prepare_weather(short)


def test_prepare_weather_rejects_bad_series():
    good = synthetic_weather("temperate")
    series = good.to_series()
    with pytest.raises(InputError, match="exactly 1 hour"):
        prepare_weather(series.drop(series.index[500]))
    with pytest.raises(InputError, match="got 8759 hours"):
        prepare_weather(series.iloc[:-1])
    with pytest.raises(InputError, match="outside -90..60"):
        prepare_weather(series + 273.15)  # Kelvin by mistake
    with pytest.raises(InputError, match="DatetimeIndex"):
        prepare_weather(pd.Series(series.to_numpy()))
    with pytest.raises(InputError, match="every hour"):
        prepare_weather(series * np.nan)
    # A leap year has 8,784 hours; a timezone-aware index is read on its local clock, so a zone with
    # daylight saving (a missing hour in spring) is rejected rather than silently shifted.
    assert len(prepare_weather(synthetic_weather("temperate", year=2024)).time) == 8784
    assert prepare_weather(series.tz_localize("UTC")).time[0] == pd.Timestamp("2021-01-01")
    dst = series.copy()
    dst.index = pd.date_range("2021-01-01", periods=8760, freq="h", tz="Europe/Amsterdam")
    with pytest.raises(InputError, match="found a step of 0 days 02:00:00 after 2021-03-28 01:00"):
        prepare_weather(dst)


def test_synthetic_weather_deterministic_and_ordered_by_climate():
    a = synthetic_weather("cold", seed=3)
    b = synthetic_weather("Dfb", seed=3)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, synthetic_weather("cold", seed=4).values)
    means = {name: synthetic_weather(name).values.mean() for name in CLIMATES}
    # Annual means sit within 0.5 K of the climate parameter (the AR(1) noise has mean 0).
    for name, climate in CLIMATES.items():
        assert means[name] == pytest.approx(climate.mean, abs=0.5)
    hdh = {n: heating_degree_hours(synthetic_weather(n).values, 15.5).sum() for n in CLIMATES}
    cdh = {n: cooling_degree_hours(synthetic_weather(n).values, 18.3).sum() for n in CLIMATES}
    assert hdh["cold"] > hdh["chicago_5a"] > hdh["temperate"] > hdh["mediterranean"] > hdh["hot"]
    assert cdh["hot"] > cdh["mediterranean"] > cdh["temperate"]
    # Chicago O'Hare normals: ~3,500 K d heating and ~480 K d cooling degree-days (base 18.3 degC).
    hdd_chicago = heating_degree_hours(synthetic_weather("chicago_5a").values, 18.3).sum() / 24
    assert 3000 < hdd_chicago < 4200
    with pytest.raises(InputError, match="unknown climate"):
        synthetic_weather("martian")
